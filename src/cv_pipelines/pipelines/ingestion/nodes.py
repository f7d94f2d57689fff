"""Nodes of the ``ingestion`` pipeline: check what is new, plan it, report what was stored."""

from __future__ import annotations

import logging

import pandas as pd

from cv_pipelines.config.parameters import IngestionParams
from cv_pipelines.images.ingestion import (
    CheckedImages,
    IngestionPlan,
    NewImages,
    check_new_images,
    describe_committed_plan,
    plan_ingestion,
)

logger = logging.getLogger(__name__)


def check_incoming_images(new_images: NewImages, ingestion: IngestionParams) -> CheckedImages:
    """Read, hash and check every file waiting in the drop zone (nothing is written).

    Args:
        new_images: the drop zone's waiting files (``new_images``).
        ingestion: the ``ingestion`` parameters.

    Returns:
        Every file with its content hash, format and size, or why it is rejected.
    """
    if not len(new_images) and not new_images.in_progress:
        logger.info("The drop zone %s is empty", new_images.folder)
    return check_new_images(new_images, ingestion)


def plan_incoming_images(
    checked_images: CheckedImages, ingestion: IngestionParams
) -> tuple[IngestionPlan, IngestionPlan]:
    """Decide each checked file's fate: a candidate for the store, a duplicate in the drop, a reject.

    Returns:
        The plan twice: for ``images_registry``, whose save commits it (the drop zone is
        consumed: each input is removed once stored or quarantined), and for the report.
    """
    plan = plan_ingestion(checked_images, ingestion, consume_source=True)
    return plan, plan


def report_ingestion(plan: IngestionPlan, images_registry: pd.DataFrame) -> pd.DataFrame:
    """One row per input file of the committed plan: new, duplicate, rejected or skipped, and why."""
    return describe_committed_plan(plan, images_registry).report()
