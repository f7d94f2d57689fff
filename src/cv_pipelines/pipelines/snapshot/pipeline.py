"""The ``snapshot`` pipeline: one node that commits and tags a DVC dataset version of the store and registries."""

from typing import Any

from kedro.pipeline import Node, Pipeline

from .nodes import snapshot_dataset_version


def create_pipeline(**kwargs: Any) -> Pipeline:
    """The pipeline: the snapshot, labeling and ingestion parameters in, the version's report (``snapshot_report``) out."""
    return Pipeline(
        [
            Node(
                snapshot_dataset_version,
                inputs=["params:snapshot", "params:labeling", "params:ingestion"],
                outputs="snapshot_report",
                name="snapshot_dataset_version",
            )
        ]
    )
