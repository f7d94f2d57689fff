"""A Kedro dataset over an append-only parquet registry (a folder of part files)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
from kedro.io import AbstractDataset
from kedro.io.core import DatasetError
from kedro_datasets._typing import TablePreview

from cv_pipelines.registries import parts as registry_parts
from cv_pipelines.registries.schemas import SCHEMAS
from cv_pipelines.registries.writer_lock import writer_lock


@dataclass(frozen=True)
class KeyedRows:
    """Rows to save by key: each key's rows replace the rows an earlier save of that key wrote.

    A key names one source of rows (a CVAT batch, a COCO import), so re-pulling a batch
    or re-importing a folder never duplicates rows. Columns in ``unchanged_if`` (when
    the rows were written) are ignored when deciding whether a key's rows changed: a
    part that holds the same rows is left untouched, so no new dataset version follows.
    """

    parts: dict[str, pd.DataFrame | pa.Table]
    unchanged_if: tuple[str, ...] = field(default=())

    @property
    def num_rows(self) -> int:
        """How many rows all keys hold together."""
        return sum(len(rows) for rows in self.parts.values())


class ParquetRegistryDataset(AbstractDataset[pd.DataFrame | KeyedRows, pd.DataFrame]):
    """Loads every part of a registry as one DataFrame; saves append a part or replace by key.

    - Saving a DataFrame appends it as one new part: O(new rows) however large the
      registry grows.
    - Saving :class:`KeyedRows` replaces each key's part (one atomic rename each).

    Both take the registries' writer lock (``registries/writer_lock.py``) of the folder
    above ``path``, so they never interleave with an ingestion or a snapshot. A registry
    named like one of ``registries.schemas.SCHEMAS`` (its folder's name) is written and,
    when empty, loaded with that schema. With ``rev`` (a dataset version tag or any git
    revision) it loads the registry as of that version through DVC's file system,
    without touching the working tree, and is read-only. Example::

        "{name}_registry":
          type: cv_pipelines.datasets.parquet_registry_dataset.ParquetRegistryDataset
          path: ${globals:paths.registry}/{name}
          rev: ${runtime_params:dataset_version, null}
    """

    def __init__(
        self,
        *,
        path: str,
        rev: str | None = None,
        load_args: dict[str, Any] | None = None,
        lock_timeout_s: float = 600.0,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Point at the registry folder ``path``, read as of ``rev`` when given.

        Args:
            path: the registry's folder (``data/registry/<name>``).
            rev: a dataset version or git revision to read at; None: the working tree.
            load_args: ``columns``: read only these columns.
            lock_timeout_s: how long a save waits for another writer.
            metadata: kedro-viz's layer and preview settings.
        """
        self._path = Path(path)
        self._rev = rev or None
        self._load_args = dict(load_args or {})
        self._lock_timeout_s = lock_timeout_s
        self._schema: pa.Schema | None = SCHEMAS.get(self._path.name)
        self.metadata = metadata

    def load(self) -> pd.DataFrame:
        """The registry's rows in append order (empty, with the schema's columns, when it has none)."""
        columns = self._load_args.get("columns")
        if self._rev is not None:
            from cv_pipelines.config.resolvers import project_root
            from cv_pipelines.versioning.dataset_versions import read_registry_at

            frame = read_registry_at(project_root(), self._path, self._rev)
            return frame[columns] if columns and not frame.empty else frame
        return registry_parts.read_registry(self._path, columns=columns, schema=self._schema)

    def check_loadable(self) -> None:
        """Refuse a ``rev`` that names no dataset version with one sentence, before any node runs (the hooks call it).

        Kedro would report it only when a node loads the registry, in three tracebacks.
        """
        if self._rev is not None:
            from cv_pipelines.config.resolvers import project_root
            from cv_pipelines.versioning.dataset_versions import check_dataset_version

            check_dataset_version(project_root(), self._rev)

    def save(self, data: pd.DataFrame | KeyedRows) -> None:
        """Append ``data`` as a part, or replace by key when it is :class:`KeyedRows` (none: nothing written)."""
        if isinstance(data, KeyedRows) and not data.parts:
            return
        if self._rev is not None:
            raise DatasetError(
                f"{self._path} is loaded as of dataset version {self._rev!r}, which is read-only; "
                "run without --params dataset_version to write to the working tree."
            )
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with writer_lock(self._path.parent, timeout_s=self._lock_timeout_s):
            if isinstance(data, KeyedRows):
                for key, rows in data.parts.items():
                    table = self._table(rows)
                    registry_parts.replace_keyed_part(self._path, key, table, ignore_columns=data.unchanged_if)
            else:
                registry_parts.append_part(self._path, data, schema=self._schema)

    def _table(self, rows: pd.DataFrame | pa.Table) -> pa.Table:
        if isinstance(rows, pa.Table):
            return rows if self._schema is None else rows.select(self._schema.names).cast(self._schema)
        if self._schema is None:
            return pa.Table.from_pandas(rows, preserve_index=False)
        table = pa.Table.from_pandas(rows[self._schema.names], schema=self._schema, preserve_index=False)
        return table.replace_schema_metadata(None)

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
