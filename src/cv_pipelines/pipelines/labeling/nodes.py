"""Nodes of the ``labeling`` pipeline."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cv_pipelines.config.resolvers import project_root
from cv_pipelines.errors import ConfigurationError
from cv_pipelines.labeling.cvat_connection import CvatConnection

logger = logging.getLogger(__name__)


def add_exclusions_from_csv(labeling: dict[str, Any], ingestion: dict[str, Any]) -> dict[str, Any]:
    """Exclude the images a CSV lists (``labeling.exclusions_csv``); nothing when unset."""
    from cv_pipelines.labeling.cycle import add_exclusions_from_csv as add

    csv_name = labeling.get("exclusions_csv")
    if not csv_name:
        return {"csv": None, "added": 0, "problems": []}
    csv_file = Path(csv_name)
    csv_file = csv_file if csv_file.is_absolute() else project_root() / csv_file
    if not csv_file.is_file():
        raise ConfigurationError(
            f"labeling.exclusions_csv {csv_file} does not exist: give the path of a CSV with columns image_id,reason."
        )
    try:
        added, problems = add(
            csv_file,
            registry=project_root() / ingestion["registry"],
            label_set=labeling["label_set"],
            lock_timeout_s=ingestion["lock_timeout_s"],
        )
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    for problem in problems:
        logger.warning(problem)
    logger.info("Exclusions from %s: %d image(s) excluded, %d row(s) skipped", csv_file.name, added, len(problems))
    return {"csv": csv_file.name, "added": added, "problems": problems}


def run_labeling_cycle(
    labeling: dict[str, Any],
    ingestion: dict[str, Any],
    snapshot: dict[str, Any],
    cvat_connection: CvatConnection,
    exclusions: dict[str, Any],
) -> dict[str, Any]:
    """Pull finished batches from CVAT, report the others, and open the next batch.

    ``exclusions`` is the CSV step's summary: taking it as input runs that step first,
    so images it excludes are never selected. A cycle that pulled annotations ends with
    a dataset snapshot unless ``labeling.snapshot_after_pull`` is off.
    """
    from cv_pipelines.labeling.cvat import CvatAdapter, CvatSettings
    from cv_pipelines.labeling.cycle import LabelingSettings
    from cv_pipelines.labeling.cycle import run_labeling_cycle as run_cycle

    cvat = labeling["cvat"]
    root = project_root()
    settings = LabelingSettings(
        project_root=root,
        store_dir=Path(ingestion["store"]),
        registry_dir=Path(ingestion["registry"]),
        batches_dir=Path(labeling["batches_dir"]),
        label_set=labeling["label_set"],
        labels=tuple(labeling["labels"]),
        batch_size=labeling["batch_size"],
        selection=labeling["selection"],
        selection_seed=labeling["selection_seed"],
        max_open_batches=labeling["max_open_batches"],
        blocking=labeling["blocking"],
        poll_interval_s=labeling["poll_interval_s"],
        wait_timeout_s=labeling["wait_timeout_s"],
        cvat_project=cvat["project_name"],
        segment_size=cvat["segment_size"],
        image_quality=cvat["image_quality"],
        upload=cvat["upload"],
        share_root=cvat["share_root"],
        exclude_tag=cvat["exclude_tag"],
        lock_timeout_s=ingestion["lock_timeout_s"],
    )
    cvat_settings = CvatSettings(
        request_timeout_s=cvat["request_timeout_s"],
        status_check_period_s=cvat["status_check_period_s"],
        max_retries=cvat["max_retries"],
        backoff_initial_s=cvat["retry_backoff_s"],
        cache_dir=root / "data/cache/cvat",
    )
    from cv_pipelines.errors import ExternalServiceError
    from cv_pipelines.labeling.cvat import CvatError
    from cv_pipelines.labeling.cycle import LabelingBusyError

    try:
        report = run_cycle(settings, lambda: CvatAdapter(cvat_connection, cvat_settings))
    except (CvatError, LabelingBusyError) as exc:
        raise ExternalServiceError(str(exc)) from exc
    logger.info("Labeling cycle: %s", report.summary())
    result = report.to_dict()
    if report.pulled and labeling["snapshot_after_pull"]:
        from cv_pipelines.pipelines.snapshot.nodes import snapshot_dataset_version

        result["snapshot"] = snapshot_dataset_version(
            snapshot, labeling, ingestion, reason="pulled " + ", ".join(sorted(report.pulled))
        )
    return result
