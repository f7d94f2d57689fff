"""Write an export plan as the next version: staged, checked, renamed into place.

A version is written into a hidden sibling folder (``.<label_set>_v<N>.<random>.tmp``),
checked there, and renamed to ``<label_set>_v<N>``: a crash or a failed check never
leaves a half export under a version name, and the next writer removes what a crash
left. Writers of one label set take turns on a lock file. The same plan gives
byte-identical files, and a plan whose content hash equals the latest version's is not
written again (timestamps live only in ``export_info.yaml``).

Example::

    result = write_export(plan, project_root=root, exports_dir=root / "data/exports",
                          check=lambda folder: check_export(folder, plan, fmt="yolo"))
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml

from cv_pipelines.config.names import escapes
from cv_pipelines.exports.coco import coco_json
from cv_pipelines.exports.errors import ExportLockedError, ExportSelectionError
from cv_pipelines.exports.selection import SPLITS, ExportPlan
from cv_pipelines.exports.versions import (
    DATASET_FILE,
    HEALTH_DIR,
    INFO_FILE,
    ExportRef,
    dataset_yaml_text,
    latest_export,
    version_folders,
    write_data_yaml,
)
from cv_pipelines.images.store import link_or_copy as _link_image  # hard link; copy across file systems
from cv_pipelines.images.store import sha256_file

ExportFormat = Literal["yolo", "coco"]


@dataclass(frozen=True)
class ExportBuild:
    """What a new export version is made from: the value the export node saves to ``yolo_export``.

    ``plan`` is the selection (images, splits, boxes, label text); ``health_files`` go
    into the version's ``health/`` folder; ``lineage`` (dataset version and commit,
    code commit, registries hash) goes into its ``export_info.yaml``; ``source_rev``
    is the git revision the registries were read at (None: the working tree), from
    which stored images missing here are fetched.
    """

    plan: ExportPlan
    health_files: Mapping[str, bytes]
    lineage: Mapping[str, Any]
    source_rev: str | None = None


@dataclass
class ExportFiles:
    """Every file of an export but ``export_info.yaml``, before anything is written."""

    #: (path in the export, path of the stored image relative to the project, image id)
    links: list[tuple[str, str, str]]
    #: path in the export -> bytes, for the files the export writes itself
    texts: dict[str, bytes]
    #: the split folders to create, even when empty
    folders: list[str]

    def manifest(self) -> dict[str, str]:
        """``path -> sha256`` of every file; a stored image's sha256 is its id."""
        digests = {target: image_id for target, _, image_id in self.links}
        digests.update({path: hashlib.sha256(data).hexdigest() for path, data in self.texts.items()})
        return digests


@dataclass
class ExportResult:
    """Where the export of a plan is, and whether this call wrote it."""

    version: int
    path: Path
    content_hash: str
    written: bool
    info: dict


def export_files(plan: ExportPlan, fmt: ExportFormat = "yolo") -> ExportFiles:
    """The files an export of ``plan`` in ``fmt`` consists of."""
    images = plan.images.sort_values(["split", "file_name"])
    splits, ids = images["split"].tolist(), images["image_id"].tolist()
    links = [
        (f"images/{split}/{name}", path, image_id)
        for split, name, path, image_id in zip(
            splits, images["file_name"].tolist(), images["path"].tolist(), ids, strict=True
        )
    ]
    if fmt == "yolo":
        texts = {
            f"labels/{split}/{image_id}.txt": plan.labels[image_id].encode()
            for split, image_id in zip(splits, ids, strict=True)
        }
        folders = [f"{kind}/{split}" for kind in ("images", "labels") for split in SPLITS]
    elif fmt == "coco":
        texts = {f"annotations/instances_{split}.json": coco_json(plan, split) for split in SPLITS}
        folders = ["annotations", *(f"images/{split}" for split in SPLITS)]
    else:
        raise ValueError(f"unknown export format {fmt!r}; use 'yolo' or 'coco'")
    return ExportFiles(links=links, texts=texts, folders=folders)


def content_hash(files: ExportFiles, *, fmt: ExportFormat, classes: list[str]) -> str:
    """SHA-256 over every file of the export but ``export_info.yaml`` and ``health/``.

    ``dataset.yaml`` counts without its ``path`` line (where the export lies on this
    machine); the health report is derived from the other files.
    """
    portable = dataset_yaml_text(classes, None) if fmt == "yolo" else None
    return _digest(files.manifest(), files.folders, portable)


def content_hash_on_disk(folder: Path, *, fmt: ExportFormat) -> str:
    """The content hash of the export in ``folder`` as its files are now, re-hashed from disk.

    It equals the ``content_hash`` recorded in ``export_info.yaml`` exactly while no file
    of the version was edited, added or removed. Left out, like ``content_hash`` leaves
    them out: ``export_info.yaml``, ``health/``, ``dataset.yaml``'s ``path`` line, and
    the label caches Ultralytics writes next to the label folders (``labels/train.cache``).
    Every file is read once (images too: a stored image's sha256 is its id).
    """
    from concurrent.futures import ThreadPoolExecutor

    folder = Path(folder)
    files, folders = _export_tree(folder)
    portable = None
    if fmt == "yolo":
        portable = _portable_dataset_yaml(folder / DATASET_FILE)
    # hashlib releases the GIL on large reads, so threads hash images side by side.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        digests = list(pool.map(sha256_file, [folder / name for name in files]))
    return _digest(dict(zip(files, digests, strict=True)), folders, portable)


def _digest(manifest: Mapping[str, str], folders: list[str], portable_dataset_yaml: str | None) -> str:
    digest = hashlib.sha256()
    if portable_dataset_yaml is not None:
        portable = hashlib.sha256(portable_dataset_yaml.encode()).hexdigest()
        digest.update(f"{DATASET_FILE} {portable}\n".encode())
    for path, file_digest in sorted(manifest.items()):
        digest.update(f"{path} {file_digest}\n".encode())
    for name in sorted(folders):
        digest.update(f"{name}/\n".encode())
    return digest.hexdigest()


def _export_tree(folder: Path) -> tuple[list[str], list[str]]:
    """The files the content hash covers, and the folders holding no folder (the split folders)."""
    files, leaves = [], []
    for dirpath, dirnames, filenames in os.walk(folder):
        relative = Path(dirpath).relative_to(folder).as_posix()
        if relative == ".":
            dirnames[:] = [name for name in dirnames if name != HEALTH_DIR]
            filenames = [name for name in filenames if name not in (INFO_FILE, DATASET_FILE)]
            prefix = ""
        else:
            prefix = f"{relative}/"
            if not dirnames:
                leaves.append(relative)
        if relative == "labels":  # Ultralytics' label caches, derived from the label files
            filenames = [name for name in filenames if not name.endswith(".cache")]
        files += [prefix + name for name in filenames]
    return files, leaves


def _portable_dataset_yaml(path: Path) -> str:
    """``dataset.yaml`` without its ``path`` key, as ``dataset_yaml_text`` writes it (the raw text if unreadable)."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if not isinstance(document, dict):
        return text
    document.pop("path", None)
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


def next_version(exports_dir: Path, label_set: str) -> int:
    """One more than the highest version folder, complete or not: a number is never reused."""
    versions = version_folders(exports_dir, label_set)
    return (versions[-1][0] if versions else 0) + 1


@contextmanager
def export_lock(exports_dir: Path, label_set: str, timeout_s: float) -> Iterator[None]:
    """Hold ``label_set``'s export lock in ``exports_dir``; ``ExportLockedError`` after ``timeout_s``."""
    from cv_pipelines.files.locks import hold_lock

    def busy(path: Path, timeout: float) -> ExportLockedError:
        return ExportLockedError(
            f"another export of label set {label_set!r} is writing into {exports_dir} and did not finish "
            f"within {timeout:.0f} s; run again once it is done"
        )

    with hold_lock(exports_dir / f".{label_set}.export.lock", timeout_s=timeout_s, busy=busy):
        yield


def write_export(
    plan: ExportPlan,
    *,
    project_root: Path,
    exports_dir: Path,
    fmt: ExportFormat = "yolo",
    lineage: Mapping[str, Any] | None = None,
    check: Callable[[Path], Mapping[str, Any]] | None = None,
    reports: Mapping[str, bytes] | None = None,
    lock_timeout_s: float = 600.0,
) -> ExportResult:
    """Write ``plan`` as the next version, unless the latest version already holds it.

    The version is written into a hidden sibling folder; ``check`` (given that folder)
    runs on it before it is renamed to ``<label_set>_v<N>``, so neither a crash nor a
    failed check leaves anything under a version name. ``reports`` (name -> bytes) go
    into ``health/``. Writers of one label set's versions take turns on a lock file.
    """
    project_root, exports_dir = Path(project_root), Path(exports_dir)
    if escapes(exports_dir / f"{plan.label_set}_v1", exports_dir):  # the label set names the folder
        raise ExportSelectionError(
            f"label set {plan.label_set!r} would put its export outside {exports_dir}; set labeling.label_set "
            "and export.label_set to a plain name such as 'demo'"
        )
    files = export_files(plan, fmt)
    digest = content_hash(files, fmt=fmt, classes=plan.classes)
    exports_dir.mkdir(parents=True, exist_ok=True)
    with export_lock(exports_dir, plan.label_set, lock_timeout_s):
        _remove_stale_staging(exports_dir, plan.label_set)
        latest = latest_export(exports_dir, plan.label_set)
        if latest is not None and latest.info.get("content_hash") == digest:
            return ExportResult(latest.version, latest.path, digest, False, latest.info)
        version = next_version(exports_dir, plan.label_set)
        final = exports_dir / f"{plan.label_set}_v{version}"
        staging = exports_dir / f".{final.name}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            _write_files(files, staging, project_root)
            if fmt == "yolo":
                write_data_yaml(ExportRef(final, version, {"classes": plan.classes}), staging / DATASET_FILE)
            for name, data in sorted((reports or {}).items()):
                (staging / HEALTH_DIR).mkdir(exist_ok=True)
                (staging / HEALTH_DIR / name).write_bytes(data)
            checked = dict(check(staging)) if check is not None else None
            info = export_info(plan, version=version, fmt=fmt, digest=digest, lineage=lineage, checked=checked)
            # Last file in: a folder with an export_info.yaml is a complete version.
            (staging / INFO_FILE).write_text(
                yaml.safe_dump(info, sort_keys=False, allow_unicode=True), encoding="utf-8"
            )
            os.rename(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(version, final, digest, True, info)


def export_info(
    plan: ExportPlan,
    *,
    version: int,
    fmt: str,
    digest: str,
    lineage: Mapping[str, Any] | None,
    checked: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The ``export_info.yaml`` of a new version: lineage, split settings, classes, counts, check, problems."""
    return {
        "version": version,
        "label_set": plan.label_set,
        "format": fmt,
        "content_hash": digest,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **dict(lineage or {}),
        "split_seed": plan.split_seed,
        "split_ratios": plan.split_ratios,
        "classes": plan.classes,
        "counts": plan.counts(),
        "check": dict(checked) if checked is not None else None,
        "problems": plan.problems,
    }


def _remove_stale_staging(exports_dir: Path, label_set: str) -> None:
    # Called under the lock: any staging folder of this label set found now was left by
    # a crash. (A regex, not a glob: ".demo_v*" would also match label set "demo_vans".)
    pattern = re.compile(rf"\.{re.escape(label_set)}_v\d+\.[0-9a-f]+\.tmp")
    for stale in exports_dir.iterdir():
        if pattern.fullmatch(stale.name):
            shutil.rmtree(stale, ignore_errors=True)


def _write_files(files: ExportFiles, staging: Path, project_root: Path) -> None:
    for folder in files.folders:
        (staging / folder).mkdir(parents=True, exist_ok=True)
    root, out = str(project_root), str(staging)
    # Plain strings and os calls: these loops run once per image of the export.
    for target, source, image_id in files.links:
        try:
            _link_image(f"{root}/{source}", f"{out}/{target}")
        except FileNotFoundError:
            raise ExportSelectionError(
                f"image {image_id} is registered at {source} but that file is missing from the store; "
                "restore it (dvc checkout / dvc pull) or exclude the image"
            ) from None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for target, data in files.texts.items():
        handle = os.open(f"{out}/{target}", flags, 0o644)
        try:
            if data:
                os.write(handle, data)
        finally:
            os.close(handle)
