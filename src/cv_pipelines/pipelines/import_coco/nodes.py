"""Nodes of the ``import_coco`` pipeline."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cv_pipelines.annotations.coco_import import import_coco_dataset
from cv_pipelines.config.resolvers import project_root
from cv_pipelines.errors import ConfigurationError

logger = logging.getLogger(__name__)


def import_labeled_coco_folder(
    import_params: dict[str, Any], labeling: dict[str, Any], ingestion: dict[str, Any]
) -> dict[str, Any]:
    """Store the folder's images (through ingestion) and register its boxes; returns a summary."""
    if not import_params.get("source"):
        raise ConfigurationError(
            "No folder to import: run `kedro run --pipelines import_coco --params import_coco.source=<folder>` "
            "with a folder holding images and a COCO instances JSON."
        )
    label_set = import_params.get("label_set") or labeling["label_set"]
    if label_set != labeling["label_set"]:
        raise ConfigurationError(
            f"import_coco.label_set {label_set!r} differs from labeling.label_set {labeling['label_set']!r}; "
            "the label order comes from labeling.labels, so import into the configured label set."
        )
    result = import_coco_dataset(
        project_root=project_root(),
        source=Path(import_params["source"]),
        labels=list(labeling["labels"]),
        label_set=label_set,
        store_dir=Path(ingestion["store"]),
        registry_dir=Path(ingestion["registry"]),
        quarantine_dir=Path(ingestion["quarantine"]),
        annotations=import_params.get("annotations"),
        images_dir=import_params.get("images_dir"),
        name=import_params.get("name"),
        annotator=import_params["annotator"],
        lock_timeout_s=ingestion["lock_timeout_s"],
        workers=ingestion["workers"],
    )
    logger.info(result.summary())
    return {
        "name": result.name,
        "label_set": label_set,
        "labeled_images": result.labeled_images,
        "boxes": result.boxes,
        "images_new": result.images_new,
        "images_already_stored": result.images_already_stored,
        "images_rejected": result.images_rejected,
        "left_out": result.problems.sentences(),
        "clipped_boxes": result.problems.clipped_boxes,
    }
