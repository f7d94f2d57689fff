"""Import an already-labeled data set: a folder of images plus a COCO instances file.

Images go through ingestion itself (same checks, store, registry, quarantine and
lock; the folder is copied from, never emptied), then the boxes become annotations of
the label set, keyed by the import's name: re-importing the same folder replaces its
rows. The steps, each a function the ``import_coco`` pipeline runs as a node:

1. :func:`read_coco_source`: find the folder's COCO file and read it (a broken file
   stops here, before anything is stored); :func:`with_label_set` then names the label
   set it imports into and that set's classes: categories outside them stop the import
   here too, unless ``import_coco.unknown_categories`` adds them (``annotations/label_sets.py``).
2. ``check_new_images`` / ``plan_ingestion`` (``images/ingestion.py``) on the images
   folder, committed by the image store's save.
3. :func:`coco_labeled_rows`: once the images are committed, the annotations and
   labels rows of the frames whose image is in the store.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Literal

import pandas as pd
import pyarrow as pa

from cv_pipelines.annotations.coco import CocoFrames, CocoImportProblems, frames_to_rows, load_coco_frames
from cv_pipelines.annotations.label_sets import (
    describe_counts,
    label_set_classes,
    label_set_rows,
    names,
    recorded_classes,
    unknown_labels,
)
from cv_pipelines.annotations.labeled_rows import labeled_rows_tables
from cv_pipelines.config.names import NAME_RULE, name_problem
from cv_pipelines.errors import ConfigurationError
from cv_pipelines.images.ingestion import IngestionPlan, describe_committed_plan

logger = logging.getLogger(__name__)

_COCO_CANDIDATES = ("annotations/instances_default.json", "annotations.json", "instances_default.json")

#: When, not what: a re-import that only differs in these keeps its parts as they are.
UNCHANGED_IF = ("pulled_at", "labeled_at", "added_at")

#: What an import does with categories outside its label set (``import_coco.unknown_categories``).
UnknownCategories = Literal["refuse", "append", "new_label_set"]


class CocoSourceError(ValueError):
    """The folder to import, or its COCO file, cannot be used; ``parameter`` is the key that fixes it.

    ``parameter`` is None when the fix lies in the file itself (the message says it).
    """

    def __init__(self, message: str, parameter: str | None) -> None:
        """Say what is wrong (``message``) and which ``import_coco`` parameter fixes it, if one does."""
        super().__init__(message)
        self.parameter = parameter


@dataclass(frozen=True)
class CocoSource:
    """A labeled folder ready to import: where its images are and its COCO frames, read.

    Once :func:`with_label_set` has run, also the label set it imports into, that set's
    classes (the import's additions at the end) and, when it adds any, the set's
    ``label_sets`` part to save.
    """

    name: str
    folder: Path
    images_dir: Path
    coco_file: Path
    frames: CocoFrames
    label_set: str = ""
    classes: tuple[str, ...] = ()
    added_classes: tuple[str, ...] = ()
    label_set_rows: pa.Table | None = None

    @property
    def source_task(self) -> str:
        """How the rows of this import are keyed and recorded: ``coco:<name>``."""
        return f"coco:{self.name}"


@dataclass
class CocoImportResult:
    """What an import did: images stored or found, boxes registered, records left out."""

    name: str
    images_new: int = 0
    images_already_stored: int = 0
    images_rejected: int = 0
    labeled_images: int = 0
    boxes: int = 0
    problems: CocoImportProblems = field(default_factory=CocoImportProblems)

    def summary(self) -> str:
        """One line for the log."""
        counts = self.problems.counts()
        why = f" ({', '.join(f'{n} {reason}' for reason, n in counts.items())})" if counts else ""
        return (
            f"COCO import {self.name!r}: {self.labeled_images} labeled images "
            f"({self.images_new} new, {self.images_already_stored} already stored, "
            f"{self.images_rejected} rejected), {self.boxes} boxes, {self.problems.count()} record(s) left out{why}, "
            f"{self.problems.clipped_boxes} box(es) clipped to the image"
        )


@dataclass(frozen=True)
class CocoLabeledRows:
    """The rows an import registers, and what it did."""

    annotations: pa.Table
    labels: pa.Table
    result: CocoImportResult


def find_coco_file(source: Path, annotations: str | None) -> Path:
    """The COCO instances file of ``source``: ``annotations`` when given, else the usual names or the only JSON.

    Raises:
        CocoSourceError: the file given does not exist, or no single candidate was found.
    """
    if annotations:
        path = Path(annotations)
        path = path if path.is_absolute() else source / path
        if not path.is_file():
            raise CocoSourceError(f"COCO file {path} does not exist", "annotations")
        return path
    for candidate in _COCO_CANDIDATES:
        if (source / candidate).is_file():
            return source / candidate
    found = sorted(source.glob("*.json")) + sorted(source.glob("annotations/*.json"))
    if len(found) == 1:
        return found[0]
    raise CocoSourceError(
        f"No single COCO instances file found in {source} (looked for {', '.join(_COCO_CANDIDATES)})", "annotations"
    )


def read_coco_source(
    source: Path, *, annotations: str | None = None, images_dir: str | None = None, name: str | None = None
) -> CocoSource:
    """Find and read the COCO file of the folder ``source`` (absolute); nothing is stored yet.

    Raises:
        CocoSourceError: ``source`` is not a folder, its COCO file is missing or broken.
    """
    if not source.is_dir():
        raise CocoSourceError(f"COCO import source {source} is not a folder", "source")
    if name is None and (problem := name_problem(source.name)) is not None:
        # The folder's name names the import's source id and its registry parts; a name
        # those would have to rewrite could collide with another import's.
        raise CocoSourceError(f"the import is named after its folder, but {problem}; {NAME_RULE}", "name")
    coco_file = find_coco_file(source, annotations)
    images_root = source / images_dir if images_dir else (source / "images" if (source / "images").is_dir() else source)
    try:
        frames = load_coco_frames(coco_file)
    except ValueError as exc:
        raise CocoSourceError(str(exc), None) from None
    return CocoSource(name or source.name, source, images_root, coco_file, frames)


def import_label_set(
    mode: UnknownCategories,
    label_set: str | None,
    *,
    labeling_set: str,
    labeling_labels: list[str],
    label_sets: pd.DataFrame,
) -> tuple[str, list[str]]:
    """The label set an import writes into (``import_coco.label_set``, else ``labeling.label_set``) and its classes.

    For ``new_label_set``, the classes an earlier import recorded for it (none for a set
    that is new). Checked before the COCO file is read.

    Raises:
        ConfigurationError: ``new_label_set`` without a name, or naming the configured
            set; a set with no classes; ``labeling.labels`` disagreeing with the record.
    """
    if mode != "new_label_set":
        chosen = label_set or labeling_set
        classes = label_set_classes(
            chosen,
            label_sets,
            labeling_set=labeling_set,
            labeling_labels=labeling_labels,
            parameter="import_coco.label_set",
        )
        return chosen, classes
    if not label_set:
        raise ConfigurationError(
            "import_coco.unknown_categories is new_label_set but import_coco.label_set is not set: name the new "
            "label set, e.g. --params import_coco.unknown_categories=new_label_set,import_coco.label_set=my_objects."
        )
    if label_set == labeling_set:
        raise ConfigurationError(
            f"import_coco.label_set {label_set!r} is labeling.label_set, whose classes labeling.labels declares, so "
            f"it is no new label set: name another one, or set import_coco.unknown_categories to append to add the "
            f"file's categories at the end of {label_set!r}."
        )
    return label_set, recorded_classes(label_sets, label_set)  # a re-import finds the set it made


def with_label_set(
    source: CocoSource,
    *,
    mode: UnknownCategories,
    label_set: str,
    classes: list[str],
    label_sets: pd.DataFrame,
) -> CocoSource:
    """``source`` with the label set it imports into, its ``classes`` (``import_label_set``) and what it adds.

    - ``refuse``: a box labeled outside ``classes`` stops the import, before anything
      is stored, naming each such category and its boxes, and both fixes;
    - ``append``: those categories become the set's next classes, in the file's
      category order (the set's other class ids stay as they are);
    - ``new_label_set``: the set's classes are the file's categories in file order; a
      set an earlier import made gets the file's new categories appended.

    Raises:
        ConfigurationError: categories outside the set (``refuse``).
    """
    if mode == "new_label_set":
        added = [name for name in source.frames.categories if name not in classes]
    else:
        unknown = unknown_labels(source.frames, classes)
        if unknown and mode == "refuse":
            boxes = sum(unknown.values())
            raise ConfigurationError(
                f"{source.coco_file} has {boxes} box(es) labeled with {len(unknown)} categor"
                f"{'y' if len(unknown) == 1 else 'ies'} outside label set {label_set!r} ({names(classes)}): "
                f"{describe_counts(unknown)}; nothing was imported: set import_coco.unknown_categories to append "
                f"to add them at the end of {label_set!r} (its class ids stay), or to new_label_set with "
                "import_coco.label_set=<new name> for a label set of the file's categories."
            )
        added = list(unknown)
    rows = None
    if added:
        rows = label_set_rows(
            label_set,
            [*classes, *added],
            label_sets,
            added=added,
            added_by=source.source_task,
            now=datetime.now(UTC),
        )
    return replace(
        source,
        label_set=label_set,
        classes=(*classes, *added),
        added_classes=tuple(added),
        label_set_rows=rows,
    )


def coco_labeled_rows(
    source: CocoSource,
    plan: IngestionPlan,
    images: pd.DataFrame,
    *,
    labels: list[str],
    label_set: str,
    annotator: str,
) -> CocoLabeledRows:
    """The annotations and labels rows of ``source``'s frames whose image the committed ``plan`` stored.

    ``images`` is the images registry after the commit: a frame counts only when its
    image is registered (new, or stored before by any source). A frame whose boxes were
    all left out is set aside with its reason, not labeled (``frames_to_rows``).
    """
    committed = describe_committed_plan(plan, images)
    result = CocoImportResult(name=source.name)
    stored: dict[str, tuple[str, int, int]] = {}
    for outcome in committed.outcomes:
        if outcome.outcome == "rejected":
            result.images_rejected += 1
        elif outcome.outcome in ("new", "duplicate_of_stored", "duplicate_in_drop"):
            stored[outcome.original_path] = (outcome.image_id, outcome.width, outcome.height)
            result.images_new += outcome.outcome == "new"
            result.images_already_stored += outcome.outcome != "new"
    annotation_rows, labeled_rows, problems = frames_to_rows(
        source.frames, image_for_frame=_frame_lookup(stored), labels=labels, source=source.coco_file.name
    )
    result.problems = problems
    problems.log(logger)
    annotations, labels_table = labeled_rows_tables(
        annotation_rows,
        labeled_rows,
        label_set=label_set,
        source_task=source.source_task,
        batch_id=source.source_task,
        annotator=annotator,
        now=datetime.now(UTC),
    )
    result.labeled_images, result.boxes = labels_table.num_rows, annotations.num_rows
    return CocoLabeledRows(annotations, labels_table, result)


def _frame_lookup(stored: dict[str, tuple[str, int, int]]):
    """A COCO ``file_name`` -> (image id, width, height): by path, by path below its first folder, by unique name."""
    by_basename: dict[str, list[tuple[str, int, int]]] = {}
    for relative, value in stored.items():
        by_basename.setdefault(PurePosixPath(relative).name, []).append(value)

    def image_for_frame(file_name: str) -> tuple[str, int, int] | None:
        relative = PurePosixPath(file_name.replace("\\", "/"))
        below_first = str(PurePosixPath(*relative.parts[1:])) if len(relative.parts) > 1 else None
        for candidate in (str(relative), below_first):
            if candidate and candidate in stored:
                return stored[candidate]
        same_name = by_basename.get(relative.name, [])
        return same_name[0] if len(same_name) == 1 else None

    return image_for_frame
