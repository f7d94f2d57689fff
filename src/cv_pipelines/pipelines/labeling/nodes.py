"""Nodes of the ``labeling`` pipeline: CSV exclusions, one cycle against CVAT, then its bookkeeping."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from cv_pipelines.config.parameters import IngestionParams, LabelingParams, SnapshotParams
from cv_pipelines.config.resolvers import in_project
from cv_pipelines.datasets.parquet_registry_dataset import KeyedRows
from cv_pipelines.errors import ConfigurationError, ExternalServiceError
from cv_pipelines.images.ingestion import StoreLayout
from cv_pipelines.labeling.cvat_connection import CvatConnection

logger = logging.getLogger(__name__)


def exclude_images_from_csv(
    params: LabelingParams, images_registry: pd.DataFrame, image_store: StoreLayout
) -> tuple[KeyedRows, dict[str, Any]]:
    """The exclusions ``labeling.exclusions_csv`` lists (nothing when unset), keyed by the CSV, and a summary.

    Raises:
        ConfigurationError: the CSV does not exist or cannot be read (naming ``labeling.exclusions_csv``).
    """
    from cv_pipelines.labeling.cycle import exclusions_from_csv

    if not params.exclusions_csv:
        return KeyedRows({}), {"csv": None, "added": 0, "problems": []}
    csv_file = in_project(image_store.project_root, params.exclusions_csv)
    if not csv_file.is_file():
        raise ConfigurationError(
            f"labeling.exclusions_csv {csv_file} does not exist: give the path of a CSV with columns image_id,reason."
        )
    try:
        rows, problems = exclusions_from_csv(csv_file, images=images_registry, label_set=params.label_set)
    except ValueError as exc:
        raise ConfigurationError(f"labeling.exclusions_csv: {exc}.") from None
    for problem in problems:
        logger.warning(problem)
    added = sum(table.num_rows for table in rows.values())
    logger.info("Exclusions from %s: %d image(s) excluded, %d row(s) skipped", csv_file.name, added, len(problems))
    return KeyedRows(rows), {"csv": csv_file.name, "added": added, "problems": problems}


def run_labeling_cycle(
    params: LabelingParams,
    ingestion: IngestionParams,
    images_registry: pd.DataFrame,
    labels_registry: pd.DataFrame,
    exclusions_registry: pd.DataFrame,
    label_sets_registry: pd.DataFrame,
    image_store: StoreLayout,
    labeling_batches: Path,
    cvat_cache: Path,
    cvat_connection: CvatConnection,
) -> tuple[KeyedRows, KeyedRows, KeyedRows, Any]:
    """Pull finished batches from CVAT, report the others, and open the next batch.

    ``exclusions_registry`` is read after the CSV step saved its exclusions, so images
    it excludes are never selected. The label set's classes are ``labeling.labels``
    extended by what COCO imports appended (``label_sets_registry``).

    Returns:
        The pulled annotations, exclusions and labels (saved in that order, by batch),
        and the cycle (report and batches) for the bookkeeping step.

    Raises:
        ExternalServiceError: CVAT failed, or another cycle is running; nothing was written.
        ConfigurationError: a finished task has boxes labeled outside the label set, or
            ``labeling.labels`` disagrees with the recorded classes; nothing was written.
    """
    from cv_pipelines.annotations.label_sets import label_set_classes
    from cv_pipelines.labeling.cvat import CvatAdapter, CvatError
    from cv_pipelines.labeling.cycle import LabelingBusyError, LabelingRegistries
    from cv_pipelines.labeling.cycle import run_labeling_cycle as run_cycle

    classes = label_set_classes(
        params.label_set,
        label_sets_registry,
        labeling_set=params.label_set,
        labeling_labels=params.labels,
        parameter="labeling.label_set",
    )
    registries = LabelingRegistries(images_registry, labels_registry, exclusions_registry)
    try:
        report, writes = run_cycle(
            params,
            registries,
            layout=image_store,
            batches_dir=labeling_batches,
            connect=lambda: CvatAdapter(cvat_connection, params.cvat, cache_dir=cvat_cache),
            lock_timeout_s=ingestion.lock_timeout_s,
            classes=classes,
        )
    except (CvatError, LabelingBusyError) as exc:
        raise ExternalServiceError(str(exc)) from exc
    logger.info("Labeling cycle: %s", report.summary())
    return KeyedRows(writes.annotations), KeyedRows(writes.exclusions), KeyedRows(writes.labels), (report, writes)


def record_labeling_cycle(labeling_cycle: Any, pulled_labels: pd.DataFrame, image_store: StoreLayout) -> tuple:
    """Mark the pulled batches pulled, now that their rows are saved (``pulled_labels``), and list every batch touched.

    Returns:
        The batches registry's rows (by batch id), and the cycle's report.
    """
    from cv_pipelines.labeling.cycle import mark_batches_pulled

    report, writes = labeling_cycle
    return KeyedRows(mark_batches_pulled(writes, project_root=image_store.project_root)), report


def snapshot_after_pull(
    labeling_cycle_recorded: Any,
    batches_registry: pd.DataFrame,
    image_store: StoreLayout,
    snapshot: SnapshotParams,
    params: LabelingParams,
    ingestion: IngestionParams,
) -> dict[str, Any]:
    """The cycle's report; a cycle that pulled annotations ends with a dataset snapshot.

    Runs once the batches registry (``batches_registry``) lists the pulled batches, so
    the snapshot holds them; ``labeling.snapshot_after_pull`` false skips it.
    """
    from cv_pipelines.pipelines.snapshot.nodes import take_snapshot

    report = labeling_cycle_recorded
    result = report.to_dict()
    if report.pulled and params.snapshot_after_pull:
        reason = "pulled " + ", ".join(sorted(report.pulled))
        result["snapshot"] = take_snapshot(image_store, snapshot, params.label_set, ingestion, reason=reason)
    return result
