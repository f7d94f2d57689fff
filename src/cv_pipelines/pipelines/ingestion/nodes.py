"""Nodes of the ``ingestion`` pipeline."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from cv_pipelines.config.resolvers import project_root
from cv_pipelines.images.ingestion import IngestionSettings, ingest_images

logger = logging.getLogger(__name__)


def ingest_incoming_images(params: dict[str, Any]) -> pd.DataFrame:
    """Store every image of the drop zone once and register it; returns one row per file.

    The registry and store writes happen inside one crash-safe transaction (see
    ``cv_pipelines.images.ingestion``), which is why they are not separate catalog saves.
    """
    settings = IngestionSettings(
        project_root=project_root(),
        source_dir=Path(params["drop_zone"]),
        store_dir=Path(params["store"]),
        registry_dir=Path(params["registry"]),
        quarantine_dir=Path(params["quarantine"]),
        source_id=params["source_id"],
        consume_source=True,
        validation=params["validation"],
        max_pixels=params["max_pixels"],
        workers=params["workers"],
        lock_timeout_s=params["lock_timeout_s"],
        show_progress=params["show_progress"],
    )
    result = ingest_images(settings)
    logger.info("Ingestion of %s: %s", params["drop_zone"], result.summary())
    return result.report()
