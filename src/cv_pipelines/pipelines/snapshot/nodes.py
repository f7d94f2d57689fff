"""Nodes of the ``snapshot`` pipeline: version the store and registries as a tagged dataset version."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from cv_pipelines.config.parameters import IngestionParams, LabelingParams, SnapshotParams
from cv_pipelines.errors import ConfigurationError
from cv_pipelines.images.ingestion import StoreLayout

logger = logging.getLogger(__name__)


def snapshot_dataset_version(
    image_store: StoreLayout,
    images_registry: pd.DataFrame,
    labels_registry: pd.DataFrame,
    snapshot: SnapshotParams,
    labeling: LabelingParams,
    ingestion: IngestionParams,
) -> dict[str, Any]:
    """Track the store and registries with DVC, push, commit the pointers, tag the version.

    Args:
        image_store: the store's folders (the ``image_store`` handle).
        images_registry: the images registry being versioned (counted in the report).
        labels_registry: the labels registry being versioned (counted in the report).
        snapshot: the ``snapshot`` parameters.
        labeling: the ``labeling`` parameters (the label set names the tag).
        ingestion: the ``ingestion`` parameters (how long to wait for the writer lock).

    Returns:
        The report: committed, tag, commit, the pointer files changed, and a summary.
    """
    label_set = labeling.label_set
    labeled = labels_registry.loc[labels_registry["label_set"] == label_set] if not labels_registry.empty else []
    report = take_snapshot(image_store, snapshot, label_set, ingestion)
    return report | {"images": len(images_registry), "labeled_images": len(labeled)}


def take_snapshot(
    image_store: StoreLayout,
    params: SnapshotParams,
    label_set: str,
    ingestion: IngestionParams,
    reason: str | None = None,
) -> dict[str, Any]:
    """The snapshot itself, for this pipeline and for a labeling cycle that pulled annotations.

    Raises:
        ConfigurationError: git or DVC refused (the sentence says why and what to do).
    """
    from cv_pipelines.config.names import check_name, within_data_folder
    from cv_pipelines.versioning.dataset_versions import SnapshotError, snapshot_dataset

    # Refused before anything is committed: the label set names the version's tag.
    try:
        check_name(label_set)
    except ValueError as exc:
        raise ConfigurationError(f"label set {exc}: set labeling.label_set to such a name.") from None
    for folder in (image_store.store, image_store.registry):
        within_data_folder(folder, image_store.project_root, what="the dataset version's data")
    message = params.message or f"Dataset snapshot of {label_set}" + (f": {reason}" if reason else "")
    try:
        result = snapshot_dataset(
            image_store.project_root,
            store_dir=image_store.store,
            registry_dir=image_store.registry,
            label_set=label_set,
            message=message,
            push=params.push,
            remote=params.remote,
            lock_timeout_s=ingestion.lock_timeout_s,
        )
    except SnapshotError as exc:
        raise ConfigurationError(str(exc)) from None
    logger.info("Snapshot: %s", result.summary())
    return {
        "committed": result.committed,
        "tag": result.tag,
        "commit": result.commit,
        "changed": result.changed_targets,
        "summary": result.summary(),
    }
