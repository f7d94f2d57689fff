"""Which export: the versions of a label set's exports, and a handle to one of them.

``<exports>/<label_set>_v<N>/`` is version ``N``; it is complete once it holds
``export_info.yaml``, the last file written into its staging folder before the rename
(see ``cv_pipelines.exports.writing``). Readers (training, evaluation, the matrix, the
``yolo_export`` catalog dataset) pick a version here and get an ``ExportRef``.

Example::

    export = find_export(Path("data/exports"), "demo", None)  # the latest complete version
    write_data_yaml(export, run_dir / "data.yaml")
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cv_pipelines.exports.errors import ExportNotFoundError

INFO_FILE = "export_info.yaml"
DATASET_FILE = "dataset.yaml"
HEALTH_DIR = "health"


@dataclass(frozen=True)
class ExportRef:
    """A complete export version: its folder, its number and its ``export_info.yaml``.

    ``written`` is True only on the handle of a version that this process has just
    written (the ``yolo_export`` dataset's save); it takes no part in comparisons.
    """

    path: Path
    version: int
    info: dict[str, Any]
    written: bool = field(default=False, compare=False)

    @property
    def name(self) -> str:
        """The version's folder name, ``<label_set>_v<N>``."""
        return self.path.name

    def lineage(self) -> dict[str, str]:
        """Where the data came from, as flat strings (MLflow tags and params want strings)."""
        info = self.info
        return {
            "export_name": self.name,
            "export_version": str(self.version),
            "export_content_hash": str(info.get("content_hash", "")),
            "label_set": str(info.get("label_set", "")),
            "dataset_version": str(info.get("dataset_version", "")),
            "dataset_commit": str(info.get("dataset_commit") or ""),
            "registries_hash": str(info.get("registries_hash") or ""),
        }


def version_folders(exports_dir: Path, label_set: str) -> list[tuple[int, Path]]:
    """Every ``<label_set>_v<N>`` folder, complete or not, by version number."""
    # A regex, not a glob: "demo_v*" would also match label set "demo_vans".
    pattern = re.compile(rf"{re.escape(label_set)}_v(\d+)")
    found = []
    if exports_dir.is_dir():
        for path in exports_dir.iterdir():
            match = pattern.fullmatch(path.name)
            if match:
                found.append((int(match.group(1)), path))
    return sorted(found)


def complete_versions(exports_dir: Path, label_set: str) -> list[int]:
    """The numbers of the complete versions (those with an ``export_info.yaml``), ascending."""
    return [version for version, path in version_folders(exports_dir, label_set) if (path / INFO_FILE).is_file()]


def read_export(folder: Path, version: int) -> ExportRef:
    """The handle of the complete version in ``folder`` (its ``export_info.yaml`` must exist)."""
    info = yaml.safe_load((folder / INFO_FILE).read_text(encoding="utf-8")) or {}
    return ExportRef(folder, version, info)


def latest_export(exports_dir: Path, label_set: str) -> ExportRef | None:
    """The newest complete version of ``label_set``, or None when there is none."""
    for version, path in reversed(version_folders(exports_dir, label_set)):
        if (path / INFO_FILE).is_file():
            return read_export(path, version)
    return None


def find_export(exports_dir: Path, label_set: str, version: int | None, *, fmt: str = "yolo") -> ExportRef:
    """Version ``version`` of ``label_set``'s exports, or the latest when None.

    Raises ``ExportNotFoundError`` when there is no export at all, when the version asked
    for is not complete (listing those that are), or when the export is not in format
    ``fmt`` (Ultralytics trains on YOLO exports only).
    """
    exports_dir = Path(exports_dir)
    if version is None:
        found = latest_export(exports_dir, label_set)
        if found is None:
            raise ExportNotFoundError(
                f"there is no export of label set {label_set!r} in {exports_dir}; run "
                "`kedro run --pipelines export` first"
            )
    else:
        folder = exports_dir / f"{label_set}_v{version}"
        if not (folder / INFO_FILE).is_file():
            known = complete_versions(exports_dir, label_set)
            raise ExportNotFoundError(
                f"export {folder.name} does not exist in {exports_dir} (complete versions: "
                f"{', '.join(map(str, known)) or 'none'})"
            )
        found = read_export(folder, version)
    if found.info.get("format", "yolo") != fmt:
        if fmt == "yolo":
            raise ExportNotFoundError(
                f"export {found.name} is in {found.info.get('format')!r} format and Ultralytics trains on YOLO "
                "exports; run the export with export.format: yolo"
            )
        raise ExportNotFoundError(f"export {found.name} is in {found.info.get('format')!r} format, not {fmt!r}")
    return found


def dataset_yaml_text(classes: list[str], path: str | None) -> str:
    """Ultralytics' data set YAML for ``classes``; ``path`` None leaves out the only machine-specific line."""
    document: dict[str, Any] = {"path": path} if path is not None else {}
    document |= {"train": "images/train", "val": "images/val", "test": "images/test", "names": dict(enumerate(classes))}
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


def write_data_yaml(export: ExportRef, target: Path) -> Path:
    """Write at ``target`` a data set YAML pointing at ``export`` where it is now; returns ``target``.

    The export's own ``dataset.yaml`` is written by this function too (at the path the
    version is renamed to), so it goes stale once the project is moved or cloned
    elsewhere; training and evaluation write a fresh one next to their runs.
    """
    text = dataset_yaml_text(list(export.info["classes"]), str(export.path.resolve()))
    Path(target).write_text(text, encoding="utf-8")
    return Path(target)
