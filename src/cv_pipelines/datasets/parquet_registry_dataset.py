"""A Kedro dataset over an append-only parquet registry (a folder of part files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset

from cv_pipelines import registry_parts


class ParquetRegistryDataset(AbstractDataset[pd.DataFrame, pd.DataFrame]):
    """Loads every part of a registry as one DataFrame; saving appends a part.

    Appending costs O(new rows) however large the registry grows. Example::

        images_registry:
          type: cv_pipelines.datasets.parquet_registry_dataset.ParquetRegistryDataset
          path: data/registry/images
    """

    def __init__(
        self,
        *,
        path: str,
        load_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._path = Path(path)
        self._load_args = dict(load_args or {})
        self.metadata = metadata

    def load(self) -> pd.DataFrame:
        return registry_parts.read_registry(self._path, columns=self._load_args.get("columns"))

    def save(self, data: pd.DataFrame) -> None:
        registry_parts.append_part(self._path, data)

    def _exists(self) -> bool:
        return bool(registry_parts.list_parts(self._path))

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "load_args": self._load_args}

    def preview(self, nrows: int = 20) -> dict[str, Any]:
        """The newest rows, as kedro-viz shows tables."""
        frame = self.load().tail(nrows) if self._exists() else pd.DataFrame()
        return frame.astype(str).to_dict(orient="split")
