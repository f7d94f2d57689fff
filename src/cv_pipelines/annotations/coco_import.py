"""Import an already-labeled data set: a folder of images plus a COCO instances file.

Images go through ingestion itself (same checks, store, registry, quarantine and
lock; the folder is copied from, never emptied), then the boxes become annotations of
the label set. Re-importing the same folder replaces its annotation rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import pyarrow as pa

from cv_pipelines.annotations.coco import CocoImportProblems, frames_to_rows, load_coco_frames
from cv_pipelines.errors import ConfigurationError
from cv_pipelines.images.ingestion import IngestionSettings, ingest_images, writer_lock
from cv_pipelines.registries import parts as registry_parts
from cv_pipelines.registries.schemas import ANNOTATIONS_SCHEMA, LABELS_SCHEMA

logger = logging.getLogger(__name__)

_COCO_CANDIDATES = ("annotations/instances_default.json", "annotations.json", "instances_default.json")


@dataclass
class CocoImportResult:
    name: str
    images_new: int = 0
    images_already_stored: int = 0
    images_rejected: int = 0
    labeled_images: int = 0
    boxes: int = 0
    problems: CocoImportProblems = field(default_factory=CocoImportProblems)

    def summary(self) -> str:
        left_out = len(self.problems.sentences())
        return (
            f"COCO import {self.name!r}: {self.labeled_images} labeled images "
            f"({self.images_new} new, {self.images_already_stored} already stored, "
            f"{self.images_rejected} rejected), {self.boxes} boxes, {left_out} record(s) left out, "
            f"{self.problems.clipped_boxes} box(es) clipped to the image"
        )


def find_coco_file(source: Path, annotations: str | None) -> Path:
    if annotations:
        path = Path(annotations)
        path = path if path.is_absolute() else source / path
        if not path.is_file():
            raise ConfigurationError(
                f"COCO file {path} does not exist: set import_coco.annotations to the instances JSON."
            )
        return path
    for candidate in _COCO_CANDIDATES:
        if (source / candidate).is_file():
            return source / candidate
    found = sorted(source.glob("*.json")) + sorted(source.glob("annotations/*.json"))
    if len(found) == 1:
        return found[0]
    raise ConfigurationError(
        f"No single COCO instances file found in {source} (looked for {', '.join(_COCO_CANDIDATES)}); "
        "set import_coco.annotations to its path."
    )


def import_coco_dataset(
    *,
    project_root: Path,
    source: Path,
    labels: list[str],
    label_set: str,
    store_dir: Path,
    registry_dir: Path,
    quarantine_dir: Path,
    annotations: str | None = None,
    images_dir: str | None = None,
    name: str | None = None,
    annotator: str = "coco_import",
    lock_timeout_s: float = 600.0,
    workers: int = 4,
) -> CocoImportResult:
    """Store the folder's images and register its boxes as annotations of ``label_set``."""
    source = source if source.is_absolute() else project_root / source
    if not source.is_dir():
        raise ConfigurationError(
            f"COCO import source {source} is not a folder: set import_coco.source to the data set's folder."
        )
    coco_file = find_coco_file(source, annotations)
    images_root = source / images_dir if images_dir else (source / "images" if (source / "images").is_dir() else source)
    name = name or source.name
    result = CocoImportResult(name=name)
    try:
        frames = load_coco_frames(coco_file)  # a broken file stops before anything is stored
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None

    ingestion = ingest_images(
        IngestionSettings(
            project_root=project_root,
            source_dir=images_root,
            store_dir=store_dir,
            registry_dir=registry_dir,
            quarantine_dir=quarantine_dir,
            source_id=f"coco:{name}",
            consume_source=False,
            lock_timeout_s=lock_timeout_s,
            workers=workers,
            show_progress=True,
        )
    )
    stored: dict[str, tuple[str, int, int]] = {}
    for outcome in ingestion.outcomes:
        if outcome.outcome == "rejected":
            result.images_rejected += 1
        elif outcome.outcome != "skipped_in_progress":
            stored[outcome.original_path] = (outcome.image_id, outcome.width, outcome.height)
            if outcome.outcome == "new":
                result.images_new += 1
            else:
                result.images_already_stored += 1
    by_basename: dict[str, list[tuple[str, int, int]]] = {}
    for relative, value in stored.items():
        by_basename.setdefault(PurePosixPath(relative).name, []).append(value)

    def image_for_frame(file_name: str) -> tuple[str, int, int] | None:
        relative = PurePosixPath(file_name.replace("\\", "/"))
        for candidate in (str(relative), str(PurePosixPath(*relative.parts[1:])) if len(relative.parts) > 1 else None):
            if candidate and candidate in stored:
                return stored[candidate]
        same_name = by_basename.get(relative.name, [])
        return same_name[0] if len(same_name) == 1 else None

    source_task = f"coco:{name}"
    annotation_rows, labeled_rows, problems = frames_to_rows(
        frames, image_for_frame=image_for_frame, labels=labels, source=f"{coco_file.name}"
    )
    result.problems = problems
    for sentence in problems.sentences():
        logger.warning(sentence)
    now = datetime.now(UTC)
    annotations_table = pa.Table.from_pylist(
        [
            row | {"label_set": label_set, "source_task": source_task, "batch_id": source_task, "pulled_at": now}
            for row in annotation_rows
        ],
        schema=ANNOTATIONS_SCHEMA,
    )
    labels_table = pa.Table.from_pylist(
        [
            row
            | {
                "label_set": label_set,
                "annotator": annotator,
                "active": True,
                "source_task": source_task,
                "batch_id": source_task,
                "labeled_at": now,
            }
            for row in labeled_rows
        ],
        schema=LABELS_SCHEMA,
    )
    registry = project_root / registry_dir if not Path(registry_dir).is_absolute() else Path(registry_dir)
    with writer_lock(registry, timeout_s=lock_timeout_s):
        # Labels last: an image counts as labeled only once its boxes are in place.
        unchanged_if = ("pulled_at", "labeled_at")  # when, not what: a re-import keeps the part
        registry_parts.replace_keyed_part(
            registry / "annotations", f"{label_set}-{source_task}", annotations_table, ignore_columns=unchanged_if
        )
        registry_parts.replace_keyed_part(
            registry / "labels", f"{label_set}-{source_task}", labels_table, ignore_columns=unchanged_if
        )
    result.labeled_images = labels_table.num_rows
    result.boxes = annotations_table.num_rows
    return result
