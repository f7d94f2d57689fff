"""The classes of a label set, in class-id order, and the labels a source names outside them.

Two places say what a label set's classes are:

- ``labeling.labels`` declares the classes of ``labeling.label_set``, the configured set;
- the ``label_sets`` registry (``data/registry/label_sets``: one part per set holding its
  whole list, versioned with the other registries) records the classes a COCO import
  appended to a set (``import_coco.unknown_categories: append``) or made a new set of
  (``new_label_set``).

A set's classes are whichever of the two lists extends the other. After an import
appended ``box`` to ``demo``, ``demo`` is ``circle, ..., ring, box`` with no change to the
configuration; adding a label to ``labeling.labels`` later means listing ``box`` before it.
When neither list extends the other a class id would move, so whatever reads the classes
(the import, the export, the labeling loop) stops with one sentence giving the list to
set. A set other than the configured one has its recorded classes only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime

import pandas as pd
import pyarrow as pa

from cv_pipelines.annotations.coco import CocoFrames
from cv_pipelines.errors import ConfigurationError
from cv_pipelines.registries.schemas import LABEL_SETS_SCHEMA

#: ``added_by`` of the classes that came from the configuration.
DECLARED = "labeling.labels"

#: How many names a sentence lists before it counts the rest.
LISTED_NAMES = 10


def recorded_classes(label_sets: pd.DataFrame, label_set: str) -> list[str]:
    """The classes the registry records for ``label_set``, in class-id order (none: an empty list)."""
    if label_sets.empty:
        return []
    rows = label_sets[label_sets["label_set"] == label_set]
    rows = rows.drop_duplicates("class_id", keep="last").sort_values("class_id")
    return [str(label) for label in rows["label"]]


def label_set_classes(
    label_set: str,
    label_sets: pd.DataFrame,
    *,
    labeling_set: str,
    labeling_labels: Sequence[str],
    parameter: str,
) -> list[str]:
    """The classes of ``label_set`` in class-id order (see the module docstring).

    Args:
        label_set: the set asked for.
        label_sets: the ``label_sets`` registry.
        labeling_set: ``labeling.label_set``, the set ``labeling_labels`` declares.
        labeling_labels: ``labeling.labels``.
        parameter: the key that chose ``label_set`` (named when the set has no classes).

    Raises:
        ConfigurationError: ``label_set`` has no classes anywhere, or ``labeling.labels``
            disagrees with the recorded classes.
    """
    recorded = recorded_classes(label_sets, label_set)
    if label_set != labeling_set:
        if recorded:
            return recorded
        raise ConfigurationError(
            f"{parameter} is {label_set!r} but labeling.label_set is {labeling_set!r}, and no COCO import recorded "
            f"classes for {label_set!r} in the label_sets registry; the class ids come from labeling.labels, so set "
            "both to the label set you want."
        )
    declared = list(labeling_labels)
    if recorded[: len(declared)] == declared:  # the import appended to the declared labels
        return recorded
    if declared[: len(recorded)] == recorded:  # none recorded, or labeling.labels added more at the end
        return declared
    wanted = recorded + [label for label in declared if label not in recorded]
    raise ConfigurationError(
        f"labeling.labels ({names(declared)}) disagrees with the classes recorded for label set {label_set!r} in "
        f"the label_sets registry ({names(recorded)}), so class ids would move; set labeling.labels to "
        f"[{', '.join(wanted)}] (new labels at the end)."
    )


def unknown_labels(frames: CocoFrames, classes: Sequence[str]) -> dict[str, int]:
    """The labels of ``frames``' boxes that are not ``classes``, with their box counts, in the file's category order."""
    known = set(classes)
    counts = Counter(box[0] for frame in frames.frames for box in frame.boxes if box[0] not in known)
    order = {name: index for index, name in enumerate(frames.categories)}
    return dict(sorted(counts.items(), key=lambda item: (order.get(item[0], len(order)), item[0])))


def describe_counts(counts: dict[str, int]) -> str:
    """``'box' (12 boxes), 'disc' (1 box)``, the first ``LISTED_NAMES`` of them and a count of the rest."""
    shown = [f"{name!r} ({count} box{'' if count == 1 else 'es'})" for name, count in counts.items()]
    return names(shown, quote=False)


def names(items: Sequence[str], *, quote: bool = False) -> str:
    """``items`` joined by commas, the first ``LISTED_NAMES`` of them and ``and N more``."""
    shown = [repr(item) if quote else str(item) for item in items[:LISTED_NAMES]]
    rest = len(items) - LISTED_NAMES
    return ", ".join(shown) + (f" and {rest} more" if rest > 0 else "")


def label_set_rows(
    label_set: str,
    classes: Sequence[str],
    label_sets: pd.DataFrame,
    *,
    added: Sequence[str],
    added_by: str,
    now: datetime,
) -> pa.Table:
    """The ``label_sets`` part of ``label_set`` holding ``classes``.

    A class recorded before keeps who added it and when; one of ``added`` is stamped
    ``added_by`` and ``now``; any other came from ``labeling.labels``.
    """
    before: dict[str, tuple[str, datetime]] = {}
    if not label_sets.empty:
        rows = label_sets[label_sets["label_set"] == label_set]
        before = {str(r.label): (str(r.added_by), r.added_at) for r in rows.itertuples()}
    new = set(added)
    records = []
    for class_id, label in enumerate(classes):
        by, at = before.get(label, (added_by if label in new else DECLARED, now))
        records.append({"label_set": label_set, "class_id": class_id, "label": label, "added_by": by, "added_at": at})
    return pa.Table.from_pylist(records, schema=LABEL_SETS_SCHEMA)
