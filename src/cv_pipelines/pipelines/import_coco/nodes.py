"""Nodes of the ``import_coco`` pipeline: a labeled folder's images into the store, its boxes into the registries."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from cv_pipelines.annotations.coco_import import (
    UNCHANGED_IF,
    CocoSource,
    CocoSourceError,
    coco_labeled_rows,
    import_label_set,
    read_coco_source,
    with_label_set,
)
from cv_pipelines.config.parameters import ImportCocoParams, IngestionParams, LabelingParams
from cv_pipelines.datasets.parquet_registry_dataset import KeyedRows
from cv_pipelines.errors import ConfigurationError
from cv_pipelines.images.ingestion import IngestionPlan, check_new_images, list_new_images, plan_ingestion
from cv_pipelines.pipelines.checks import checks_before_run

logger = logging.getLogger(__name__)


@checks_before_run  # a refusal leaves nothing behind, not even a failed MLflow run
def read_coco_folder(
    folder: Path, params: ImportCocoParams, labeling: LabelingParams, label_sets: pd.DataFrame
) -> CocoSource:
    """Find and read the COCO file of ``folder`` (``labeled_folder``) and choose its label set's classes.

    A broken file, or boxes labeled outside the label set (unless
    ``import_coco.unknown_categories`` says to add them), stop the run here, before
    anything is stored. ``label_sets`` is the ``label_sets`` registry.

    Raises:
        ConfigurationError: no source, a label set without classes, categories outside
            the label set, or a folder or COCO file that cannot be used (naming the
            ``import_coco`` key to fix).
    """
    label_set, classes = import_label_set(
        params.unknown_categories,
        params.label_set,
        labeling_set=labeling.label_set,
        labeling_labels=list(labeling.labels),
        label_sets=label_sets,
    )
    try:
        source = read_coco_source(
            folder,
            annotations=params.annotations,
            images_dir=params.images_dir,
            name=params.name,
        )
    except CocoSourceError as exc:
        fix = f": set import_coco.{exc.parameter} to fix it" if exc.parameter else ""
        raise ConfigurationError(f"{exc}{fix}.") from None
    return with_label_set(
        source, mode=params.unknown_categories, label_set=label_set, classes=classes, label_sets=label_sets
    )


def plan_coco_images(coco_source: CocoSource, ingestion: IngestionParams) -> tuple[IngestionPlan, IngestionPlan]:
    """Check the folder's images and plan their ingestion (copied from, never removed).

    The folder stays as it is, so a bad image in it is found again by every re-import;
    the commit quarantines and records the same bytes at the same path once.

    Returns:
        The plan twice: for ``coco_images``, whose save commits it into the store, and
        for the rows step, which needs to know which file became which image.
    """
    params = ingestion.model_copy(update={"source_id": coco_source.source_task})
    checked = check_new_images(list_new_images(coco_source.images_dir), params)
    plan = plan_ingestion(checked, params, consume_source=False)
    return plan, plan


def register_coco_boxes(
    coco_source: CocoSource,
    coco_plan: IngestionPlan,
    coco_images: pd.DataFrame,
    params: ImportCocoParams,
) -> tuple[KeyedRows, KeyedRows, KeyedRows, dict[str, Any]]:
    """The label set's classes (when the import adds any), the import's boxes and labeled images, and its summary.

    ``coco_images`` is the images registry after the folder's images were committed.
    Saved in this order, classes, annotations, then labels: a box's label is a class of
    its set before the box is saved, and an image counts as labeled only once its boxes
    are in place.
    """
    label_set = coco_source.label_set
    rows = coco_labeled_rows(
        coco_source,
        coco_plan,
        coco_images,
        labels=list(coco_source.classes),
        label_set=label_set,
        annotator=params.annotator,
    )
    result = rows.result
    added = list(coco_source.added_classes)
    gained = ""
    if added:
        first, last = len(coco_source.classes) - len(added), len(coco_source.classes) - 1
        kept = f"; ids 0-{first - 1} stay" if first else ""
        gained = f"; label set {label_set!r} gained class(es) {', '.join(added)} (class ids {first}-{last}{kept})"
    logger.info(result.summary() + gained)
    key = f"{label_set}-{coco_source.source_task}"
    summary = {
        "name": result.name,
        "label_set": label_set,
        "classes": list(coco_source.classes),
        "classes_added": added,
        "labeled_images": result.labeled_images,
        "boxes": result.boxes,
        "images_new": result.images_new,
        "images_already_stored": result.images_already_stored,
        "images_rejected": result.images_rejected,
        "left_out": result.problems.count(),
        "left_out_by_reason": result.problems.counts(),
        "left_out_records": result.problems.grouped(),
        "clipped_boxes": result.problems.clipped_boxes,
    }
    classes = {label_set: coco_source.label_set_rows} if coco_source.label_set_rows is not None else {}
    return (
        KeyedRows(classes, unchanged_if=UNCHANGED_IF),
        KeyedRows({key: rows.annotations}, unchanged_if=UNCHANGED_IF),
        KeyedRows({key: rows.labels}, unchanged_if=UNCHANGED_IF),
        summary,
    )
