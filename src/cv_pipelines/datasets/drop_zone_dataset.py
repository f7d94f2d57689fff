"""The drop zone as a Kedro dataset: loading it gives the images waiting to be ingested."""

from __future__ import annotations

from typing import Any

from kedro.io import AbstractDataset
from kedro.io.core import DatasetError
from kedro_datasets._typing import TablePreview

from cv_pipelines.datasets._paths import local_project_path
from cv_pipelines.images.ingestion import NewImages, list_new_images


class DropZoneDataset(AbstractDataset[None, NewImages]):
    """A folder where new images land; ``load`` is "what is new" (read-only).

    Like ``kedro_datasets.partitions.IncrementalDataset``, it gives only what has not
    been processed yet, but its checkpoint is the folder itself: the image store's save
    removes each input once it is committed (see ``ImageStoreDataset``), so what is
    still there is what is new. Nested folders are included, dotfiles skipped, and
    files still being uploaded (``.part``, ``.tmp``, ...) are listed apart and left for
    the next run. Example::

        new_images:
          type: cv_pipelines.datasets.drop_zone_dataset.DropZoneDataset
          path: ${globals:paths.incoming}

    The folder must be local (plain or ``file://``): the store hard-links from it.
    """

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        """Point at the drop zone ``path`` (relative paths are anchored to the project root)."""
        self._path = local_project_path(path, dataset="DropZoneDataset", why="the image store hard-links its files")
        self.metadata = metadata

    def load(self) -> NewImages:
        """The files waiting in the drop zone now, sorted; empty when the folder does not exist."""
        return list_new_images(self._path)

    def save(self, data: None) -> None:
        """Refuse: files arrive in the drop zone from outside the pipeline."""
        raise DatasetError(f"{self._path} is a drop zone: files are dropped there, not saved by a pipeline.")

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}

    def preview(self, nrows: int = 20) -> TablePreview:
        """The first ``nrows`` waiting files, for kedro-viz's table preview."""
        waiting = self.load()
        rows = [[relative, "ready"] for _, relative in waiting.files[:nrows]]
        rows += [[relative, "still being written"] for relative in waiting.in_progress[: max(0, nrows - len(rows))]]
        return TablePreview({"columns": ["file", "state"], "index": list(range(len(rows))), "data": rows})
