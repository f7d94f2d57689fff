"""A load-only handle on a project folder, for steps whose library writes a folder layout itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset
from kedro.io.core import DatasetError

from cv_pipelines.datasets._paths import local_project_path


class FolderDataset(AbstractDataset[None, Path]):
    """Loads the absolute path of a project folder named in the catalog (read-only).

    For folders whose files a library writes with its own crash-safe layout (batch
    folders renamed into place once their CVAT task exists, the demo data set written
    file by file through atomic renames): the catalog owns where they are, the library
    owns how they are written. Example::

        labeling_batches:
          type: cv_pipelines.datasets.folder_dataset.FolderDataset
          path: ${globals:paths.batches}
    """

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        """Point at ``path`` (relative paths are anchored to the project root; local only)."""
        self._path = local_project_path(path, dataset="FolderDataset", why="its library writes with atomic renames")
        self.metadata = metadata

    def load(self) -> Path:
        """The folder's absolute path (it need not exist yet)."""
        return self._path

    def save(self, data: None) -> None:
        """Refuse: the folder's contents are written by the step that loads it."""
        raise DatasetError(f"{self._path} is a folder handle; its step writes into it.")

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
