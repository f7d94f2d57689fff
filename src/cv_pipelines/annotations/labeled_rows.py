"""The rows a finished labeling source adds: boxes for the annotations registry, one row per image for labels.

A CVAT pull and a COCO import both turn ``frames_to_rows`` output into these two
tables; this is the one place that stamps them with the label set, the source and
the time.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import pyarrow as pa

from cv_pipelines.registries.schemas import ANNOTATIONS_SCHEMA, LABELS_SCHEMA


def labeled_rows_tables(
    annotation_rows: Iterable[dict],
    labeled_rows: Iterable[dict],
    *,
    label_set: str,
    source_task: str,
    batch_id: str,
    annotator: str,
    now: datetime,
    skip_images: frozenset[str] | set[str] = frozenset(),
) -> tuple[pa.Table, pa.Table]:
    """The annotations and labels tables of one source, images in ``skip_images`` left out.

    Args:
        annotation_rows: one dict per box (``frames_to_rows``' first result).
        labeled_rows: one dict per labeled image (its second result).
        label_set: the label set the boxes belong to.
        source_task: ``cvat:<task id>`` or ``coco:<import name>``.
        batch_id: the batch the rows came from (the source itself for an import).
        annotator: who labeled them.
        now: when they were pulled or imported.
        skip_images: image ids whose rows are dropped (excluded in CVAT).

    Returns:
        ``(annotations, labels)`` with the registries' schemas.
    """
    common = {"label_set": label_set, "source_task": source_task, "batch_id": batch_id}
    annotations = pa.Table.from_pylist(
        [row | common | {"pulled_at": now} for row in annotation_rows if row["image_id"] not in skip_images],
        schema=ANNOTATIONS_SCHEMA,
    )
    labels = pa.Table.from_pylist(
        [
            row | common | {"annotator": annotator, "active": True, "labeled_at": now}
            for row in labeled_rows
            if row["image_id"] not in skip_images
        ],
        schema=LABELS_SCHEMA,
    )
    return annotations, labels
