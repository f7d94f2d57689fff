"""``LabeledFolderDataset``: a folder of images with a COCO file, as the COCO import reads it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset
from kedro_datasets._typing import JSONPreview

from cv_pipelines.datasets._paths import local_project_path
from cv_pipelines.errors import ConfigurationError

#: The record a generator (the demo data) leaves in the folder it wrote.
SUMMARY_FILE = "summary.yml"


class LabeledFolderDataset(AbstractDataset[dict[str, Any], Path]):
    """Load: the folder's absolute path, checked to be a folder. Save: the record of what was written into it.

    The folder is ``--params import_coco.source=<folder>`` when given (the catalog reads
    the same runtime parameter), else the demo data set, so ``kedro run`` imports what
    the ``demo_data`` pipeline generated. The images and COCO file are the user's (or the
    generator's, which writes them with atomic renames); a save writes only the record,
    ``summary.yml``.

    Args:
        path: the folder, relative to the project or absolute (local: images are hard-linked).
        metadata: kedro-viz and other plugins' metadata.
    """

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = local_project_path(
            path, dataset="LabeledFolderDataset", why="its images are linked into the store"
        )
        self.metadata = metadata

    def load(self) -> Path:
        """The folder; a one-sentence error naming ``import_coco.source`` when it is not one."""
        return self._folder()

    def check_loadable(self) -> None:
        """Fail before any node runs when the folder is missing (the project's hooks call it)."""
        # Not self.load(): Kedro wraps every load's error in a DatasetError, traceback and all.
        self._folder()

    def _folder(self) -> Path:
        if not self._path.is_dir():
            raise ConfigurationError(
                f"No folder to import at {self._path}: run `kedro run --pipelines import_coco --params "
                "import_coco.source=<folder>` with a folder holding images and a COCO instances JSON, or "
                "`kedro run --pipelines demo_data` first to import the demo data set."
            )
        return self._path

    def save(self, data: dict[str, Any]) -> None:
        """Record what was written into the folder (``summary.yml``, atomically)."""
        import yaml

        from cv_pipelines.files.atomic import write_text_atomically

        self._path.mkdir(parents=True, exist_ok=True)
        write_text_atomically(self._path / SUMMARY_FILE, yaml.safe_dump(data, sort_keys=False))

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}

    def preview(self) -> JSONPreview:
        """The folder's record (what the demo generator wrote), for kedro-viz."""
        import yaml

        record = self._path / SUMMARY_FILE
        shown = yaml.safe_load(record.read_text(encoding="utf-8")) if record.is_file() else {"path": str(self._path)}
        return JSONPreview(json.dumps(shown, default=str))
