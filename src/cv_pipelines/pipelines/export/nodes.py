"""Nodes of the ``export`` pipeline."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from cv_pipelines.config_resolvers import project_root
from cv_pipelines.errors import ConfigurationError

logger = logging.getLogger(__name__)


def _registry(frame: pd.DataFrame, schema) -> pd.DataFrame:
    """An empty registry loads with no columns; give it the schema's."""
    return frame if not frame.empty else schema.empty_table().to_pandas()


def export_yolo_dataset(
    images: pd.DataFrame,
    annotations: pd.DataFrame,
    labels: pd.DataFrame,
    exclusions: pd.DataFrame,
    export: dict[str, Any],
    labeling: dict[str, Any],
    dataset_version: str | None,
) -> tuple[dict[str, Any], pd.DataFrame, Any]:
    """Write the next export version (or find the one that already holds this content).

    Returns the export summary (its ``export_info``), the health table and the health plot.
    """
    from cv_pipelines.dataset_versions import ensure_images_present, resolve_version
    from cv_pipelines.ingest_images import IMAGES_SCHEMA
    from cv_pipelines.offline import ultralytics_settings_offline
    from cv_pipelines.registry_schemas import ANNOTATIONS_SCHEMA, EXCLUSIONS_SCHEMA, LABELS_SCHEMA
    from cv_pipelines.yolo_export import check_with_ultralytics, health_plot, health_table, plan_export, write_export

    if export["label_set"] != labeling["label_set"]:
        raise ConfigurationError(
            f"export.label_set {export['label_set']!r} is not labeling.label_set {labeling['label_set']!r}; the class "
            "order comes from labeling.labels, so export the configured label set."
        )
    root = project_root()
    frames = {
        "images": _registry(images, IMAGES_SCHEMA),
        "annotations": _registry(annotations, ANNOTATIONS_SCHEMA),
        "labels": _registry(labels, LABELS_SCHEMA),
        "exclusions": _registry(exclusions, EXCLUSIONS_SCHEMA),
    }
    try:
        plan = plan_export(
            **frames,
            label_set=export["label_set"],
            classes=list(labeling["labels"]),
            split_seed=export["split_seed"],
            split_ratios=dict(export["split_ratios"]),
        )
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    for problem in plan.problems:
        logger.warning(problem)
    fetched = ensure_images_present(root, list(plan.images["path"]), dataset_version)
    version = resolve_version(root, dataset_version, frames)
    lineage = {
        "dataset_version": version.dataset_version or "working tree",
        "dataset_commit": version.commit,
        "registries_hash": version.registries_hash,
    }
    result = write_export(plan, project_root=root, exports_dir=root / export["output_dir"], fmt=export["format"],
                          lineage=lineage)
    if not result.written:
        logger.info("Export: the content equals %s (v%d); nothing written", result.path.name, result.version)
    else:
        if export["format"] == "yolo":
            ultralytics_settings_offline(root)
            checked = check_with_ultralytics(result.path, len(plan.classes))
            logger.info("Ultralytics checked %d images: 0 corrupt, 0 missing labels", checked["checked_images"])
        counts = result.info["counts"]["images"]
        logger.info(
            "Export %s: %s images (train %d, val %d, test %d)%s", result.path.name, sum(counts.values()),
            counts["train"], counts["val"], counts["test"], f"; fetched {fetched} missing image(s)" if fetched else "",
        )
    summary = dict(result.info) | {"path": str(result.path.relative_to(root)), "written": result.written}
    return summary, health_table(plan), health_plot(plan)
