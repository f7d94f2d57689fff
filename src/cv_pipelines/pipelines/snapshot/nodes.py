"""Nodes of the ``snapshot`` pipeline."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cv_pipelines.config.resolvers import project_root
from cv_pipelines.errors import ConfigurationError

logger = logging.getLogger(__name__)


def snapshot_dataset_version(
    snapshot: dict[str, Any], labeling: dict[str, Any], ingestion: dict[str, Any], reason: str | None = None
) -> dict[str, Any]:
    """Track the store and registries with DVC, push, commit the pointers, tag the version."""
    from cv_pipelines.versioning.dataset_versions import SnapshotError, snapshot_dataset

    label_set = labeling["label_set"]
    message = snapshot.get("message") or f"Dataset snapshot of {label_set}" + (f": {reason}" if reason else "")
    try:
        result = snapshot_dataset(
            project_root(),
            store_dir=Path(ingestion["store"]),
            registry_dir=Path(ingestion["registry"]),
            label_set=label_set,
            message=message,
            push=snapshot["push"],
            remote=snapshot.get("remote"),
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
