"""``YoloExportDataset``: a versioned YOLO export (provisional load-only form; the export pipeline saves it)."""

from __future__ import annotations

from typing import Any

from kedro.io import AbstractDataset

from cv_pipelines.models.training import ExportRef


class YoloExportDataset(AbstractDataset[Any, ExportRef]):
    """Load: the pinned ``version`` of ``label_set`` under ``path``, else the latest complete one."""

    def __init__(
        self,
        *,
        path: str,
        label_set: str,
        version: int | None = None,
        format: str = "yolo",
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._path = path
        self._label_set = label_set
        self._version = int(version) if version is not None else None
        self._format = format
        self.metadata = metadata

    def load(self) -> ExportRef:
        """The export version as a handle; a one-sentence error when there is none."""
        from cv_pipelines.config.resolvers import in_project, project_root
        from cv_pipelines.models.training import find_export

        return find_export(in_project(project_root(), self._path), self._label_set, self._version)

    def save(self, data: Any) -> None:
        """Not yet: the export pipeline writes its versions itself."""
        raise NotImplementedError

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path, "label_set": self._label_set, "version": self._version}
