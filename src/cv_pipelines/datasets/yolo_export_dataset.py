"""The catalog's YOLO (or COCO) export: versioned folders ``<path>/<label_set>_v<N>/``.

Example (``conf/base/catalog_export.yml``)::

    yolo_export:
      type: cv_pipelines.datasets.yolo_export_dataset.YoloExportDataset
      path: ${globals:paths.exports}
      label_set: ${runtime_params:export.label_set, ${globals:export.label_set}}
      format: ${runtime_params:export.format, ${globals:export.format}}
      export_version: ${runtime_params:training.export_version, null}
"""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset
from kedro.io.core import DatasetError, get_protocol_and_path
from kedro_datasets._typing import JSONPreview

from cv_pipelines.errors import ConfigurationError
from cv_pipelines.exports.checks import check_export
from cv_pipelines.exports.errors import ExportCheckError, ExportLockedError, ExportNotFoundError, ExportSelectionError
from cv_pipelines.exports.versions import INFO_FILE, ExportRef, find_export, latest_export
from cv_pipelines.exports.writing import ExportBuild, ExportFormat, write_export

logger = logging.getLogger(__name__)

_FORMATS = ("yolo", "coco")


class ExportDatasetError(ConfigurationError, DatasetError):
    """A one-sentence ``ConfigurationError`` that is also the ``DatasetError`` Kedro expects.

    ``AbstractDataset`` passes a ``DatasetError`` through as it is, where it would wrap
    anything else in "Failed while loading data from dataset ..."; the catalog then
    prefixes the entry's name (``yolo_export: <sentence>``) and keeps this error as the
    cause, where a command-line wrapper can find it.
    """


class YoloExportDataset(AbstractDataset[ExportBuild, ExportRef]):
    """The versioned export of one label set: load gives a version's ``ExportRef``, save writes one.

    Load returns, in this order of preference: the pinned ``export_version``; else the
    version this instance saved last in this process (so ``kedro run --pipelines
    export,training`` trains on exactly what the export produced, also when that was an
    older version holding the same content); else the latest complete version. It
    raises a one-sentence ``ConfigurationError`` when there is none, or when the pinned
    one is not complete (naming those that are).

    Save takes an ``ExportBuild`` (the export node's output) and writes the next
    version: stored images missing from the working tree are fetched from DVC at the
    build's ``source_rev``, the version is written into a hidden staging folder, checked
    (Ultralytics for ``yolo``, pycocotools for ``coco``) and renamed into place, under
    the label set's lock. When the latest version already holds the same content,
    nothing is written and that version is what load gives.

    ``path`` is local (absolute or relative to the project root): an export is hard
    links into the image store, renamed into place, and read by Ultralytics from disk.
    Put exports into object storage with DVC (``dvc push``), not through this dataset.
    """

    def __init__(
        self,
        *,
        path: str,
        label_set: str,
        export_version: int | str | None = None,
        format: str = "yolo",
        lock_timeout_s: float = 600.0,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Point at the exports of ``label_set`` in ``path``, optionally pinned to ``export_version``.

        Args:
            path: The folder of the versions, absolute or relative to the project root.
            label_set: The label set whose versions (``<label_set>_v<N>``) this dataset holds.
            export_version: The version load gives (``--params training.export_version=N``);
                None: the one saved last in this process, else the latest. Not named
                ``version``: Kedro drops that key from a catalog entry (it is reserved
                for its own timestamped versioning).
            format: ``yolo`` (labels/, dataset.yaml) or ``coco`` (annotations/).
            lock_timeout_s: How long a save waits for another export of the label set.
            metadata: Ignored by Kedro; kedro-viz reads its layer here.
        """
        protocol, local = get_protocol_and_path(str(path))
        if protocol != "file":
            raise DatasetError(
                f"yolo_export needs a local folder, not {path!r}: an export is hard links into the image store "
                "renamed into place; put exports into object storage with DVC (dvc push)"
            )
        if format not in _FORMATS:
            raise DatasetError(f"unknown export format {format!r}; set export.format to yolo or coco")
        self._path = local
        self._label_set = str(label_set)
        self._version = _version_number(export_version)
        self._format: ExportFormat = "coco" if format == "coco" else "yolo"
        self._lock_timeout_s = float(lock_timeout_s)
        self._saved: ExportRef | None = None
        self.metadata = metadata

    def load(self) -> ExportRef:
        """The pinned version, else the one saved last by this instance, else the latest complete one."""
        if self._saved is not None and self._version in (None, self._saved.version):
            return self._saved
        if self._saved is not None:
            logger.warning(
                "yolo_export is pinned to version %s (training.export_version), not %s that this run saved",
                self._version,
                self._saved.name,
            )
        try:
            return self._find()
        except ConfigurationError as exc:
            raise ExportDatasetError(exc.message) from None

    def check_loadable(self) -> None:
        """Raise the one-sentence error ``load`` would, before any node runs (the project's hooks call it).

        Kedro reports a failed load only when a node needs the data, wrapped in a traceback.
        """
        if self._saved is None:
            # Not self.load(): Kedro wraps every load's error in a DatasetError, traceback and all.
            self._find()

    def _find(self) -> ExportRef:
        """The pinned or latest complete version; a ``ConfigurationError`` with the fix when there is none."""
        try:
            return find_export(self._exports_dir(), self._label_set, self._version, fmt=self._format)
        except ExportNotFoundError as exc:
            if self._version is None:
                raise ConfigurationError(str(exc)) from None
            # The catalog entry takes the pinned version from `--params training.export_version=N`.
            raise ConfigurationError(
                f"{exc}; set training.export_version to one of them, or null for the latest"
            ) from None

    def save(self, data: ExportBuild) -> None:
        """Write ``data`` as the next version (staged, checked, renamed), or find the version holding it."""
        from cv_pipelines.config.resolvers import project_root
        from cv_pipelines.versioning.dataset_versions import ensure_images_present

        plan = data.plan
        if plan.label_set != self._label_set:
            raise ExportDatasetError(
                f"the export selected label set {plan.label_set!r} but yolo_export holds {self._label_set!r}; set "
                "label_set in conf/base/globals.yml, which both read (or --params export.label_set=..., which reaches both)"
            )
        root = project_root()
        ensure_images_present(root, plan.images["path"].tolist(), data.source_rev)
        try:
            result = write_export(
                plan,
                project_root=root,
                exports_dir=self._exports_dir(),
                fmt=self._format,
                lineage=data.lineage,
                check=partial(check_export, plan=plan, fmt=self._format, project_root=root),
                reports=data.health_files,
                lock_timeout_s=self._lock_timeout_s,
            )
        except (ExportCheckError, ExportSelectionError, ExportLockedError) as exc:
            raise ExportDatasetError(f"{exc} (nothing was written)") from None
        self._saved = ExportRef(result.path, result.version, result.info, written=result.written)

    def _exists(self) -> bool:
        if self._version is not None:
            return (self._exports_dir() / f"{self._label_set}_v{self._version}" / INFO_FILE).is_file()
        return self._saved is not None or latest_export(self._exports_dir(), self._label_set) is not None

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path, "label_set": self._label_set, "version": self._version, "format": self._format}

    def preview(self) -> JSONPreview:
        """The version load gives, for kedro-viz: name, version, content hash, lineage and counts per split.

        kedro-viz picks the widget by the name of the return annotation (``JSONPreview``).
        """
        if not self._exists():
            return JSONPreview(json.dumps({"export": None, "hint": "run `kedro run --pipelines export`"}))
        export = self.load()
        info = export.info
        shown = {
            "export": export.name,
            **export.lineage(),
            "format": info.get("format"),
            "created_at": info.get("created_at"),
        }
        shown |= {"classes": info.get("classes"), "counts": info.get("counts"), "problems": info.get("problems")}
        return JSONPreview(json.dumps(shown, default=str))

    def _exports_dir(self) -> Path:
        from cv_pipelines.config.resolvers import in_project, project_root

        return in_project(project_root(), self._path)


def _version_number(version: int | str | None) -> int | None:
    """``version`` as a positive int (``--params`` may give a string), or None."""
    if version is None or version == "":
        return None
    try:
        number = int(version)
    except (TypeError, ValueError):
        number = 0
    if number < 1:
        raise DatasetError(f"export version {version!r} is not a version number; use 1, 2, ... or null for the latest")
    return number
