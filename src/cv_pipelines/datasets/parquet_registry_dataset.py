"""A Kedro dataset over an append-only parquet registry (a folder of part files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset
from kedro_datasets._typing import TablePreview

from cv_pipelines.registries import parts as registry_parts


class ParquetRegistryDataset(AbstractDataset[pd.DataFrame, pd.DataFrame]):
    """Loads every part of a registry as one DataFrame; saving appends a part.

    Appending costs O(new rows) however large the registry grows. With ``rev`` (a
    dataset version tag or any git revision) it loads the registry as of that version
    through DVC's file system, without touching the working tree, and is read-only.
    Example::

        images_registry:
          type: cv_pipelines.datasets.parquet_registry_dataset.ParquetRegistryDataset
          path: data/registry/images
          rev: ${runtime_params:dataset_version, null}
    """

    def __init__(
        self,
        *,
        path: str,
        rev: str | None = None,
        load_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._path = Path(path)
        self._rev = rev or None
        self._load_args = dict(load_args or {})
        self.metadata = metadata

    def load(self) -> pd.DataFrame:
        if self._rev is not None:
            from cv_pipelines.config.resolvers import project_root
            from cv_pipelines.versioning.dataset_versions import read_registry_at

            frame = read_registry_at(project_root(), self._path, self._rev)
            columns = self._load_args.get("columns")
            return frame[columns] if columns and not frame.empty else frame
        return registry_parts.read_registry(self._path, columns=self._load_args.get("columns"))

    def save(self, data: pd.DataFrame) -> None:
        if self._rev is not None:
            raise ValueError(
                f"{self._path} is loaded as of dataset version {self._rev!r}, which is read-only; "
                "run without --params dataset_version to write to the working tree."
            )
        registry_parts.append_part(self._path, data)

    def _exists(self) -> bool:
        if self._rev is not None:
            return True
        return bool(registry_parts.list_parts(self._path))

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "rev": self._rev, "load_args": self._load_args}

    def preview(self, nrows: int = 20) -> TablePreview:
        """The newest ``nrows`` rows, for kedro-viz's table preview.

        kedro-viz picks the widget by the *name* of this method's return annotation
        (``TablePreview``), so the annotation is what makes it a table. Values are
        strings: timestamps and nested values would not survive the JSON otherwise.
        """
        frame = self.load().tail(nrows) if self._exists() else pd.DataFrame()
        return TablePreview(frame.astype(str).to_dict(orient="split"))
