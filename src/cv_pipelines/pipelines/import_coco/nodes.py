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
    read_coco_source,
)
from cv_pipelines.config.parameters import ImportCocoParams, IngestionParams, LabelingParams
from cv_pipelines.datasets.parquet_registry_dataset import KeyedRows
from cv_pipelines.errors import ConfigurationError
from cv_pipelines.images.ingestion import IngestionPlan, check_new_images, list_new_images, plan_ingestion

logger = logging.getLogger(__name__)


def read_coco_folder(folder: Path, params: ImportCocoParams, labeling: LabelingParams) -> CocoSource:
    """Find and read the COCO file of ``folder`` (``labeled_folder``); a broken file stops the run here.

    Raises:
        ConfigurationError: no source, a label set other than ``labeling.label_set``, or a
            folder or COCO file that cannot be used (naming the ``import_coco`` key to fix).
    """
    label_set = labeling.label_set
    if (params.label_set or label_set) != label_set:
        raise ConfigurationError(
            f"import_coco.label_set {params.label_set!r} differs from labeling.label_set {label_set!r}; "
            "the label order comes from labeling.labels, so import into the configured label set."
        )
    try:
        return read_coco_source(
            folder,
            annotations=params.annotations,
            images_dir=params.images_dir,
            name=params.name,
        )
    except CocoSourceError as exc:
        fix = f": set import_coco.{exc.parameter} to fix it" if exc.parameter else ""
        raise ConfigurationError(f"{exc}{fix}.") from None


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
    labels: LabelingParams,
) -> tuple[KeyedRows, KeyedRows, dict[str, Any]]:
    """The import's boxes and labeled images, keyed by the import, and its summary.

    ``coco_images`` is the images registry after the folder's images were committed.
    Saved in this order, annotations before labels: an image counts as labeled only
    once its boxes are in place.
    """
    rows = coco_labeled_rows(
        coco_source,
        coco_plan,
        coco_images,
        labels=list(labels.labels),
        label_set=labels.label_set,
        annotator=params.annotator,
    )
    result = rows.result
    logger.info(result.summary())
    key = f"{labels.label_set}-{coco_source.source_task}"
    summary = {
        "name": result.name,
        "label_set": labels.label_set,
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
    return (
        KeyedRows({key: rows.annotations}, unchanged_if=UNCHANGED_IF),
        KeyedRows({key: rows.labels}, unchanged_if=UNCHANGED_IF),
        summary,
    )
