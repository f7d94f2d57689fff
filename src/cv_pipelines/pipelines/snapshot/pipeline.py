"""The ``snapshot`` pipeline: the store and registries -> a tagged DVC dataset version."""

from typing import Any

from kedro.pipeline import Node, Pipeline

from .nodes import snapshot_dataset_version


def create_pipeline(**kwargs: Any) -> Pipeline:
    """Version ``image_store`` with the registries ingestion and the COCO import write; ``snapshot_report`` out."""
    return Pipeline(
        [
            Node(
                snapshot_dataset_version,
                inputs=[
                    "image_store",
                    "images_registry",
                    "labels_registry",
                    "params:snapshot",
                    "params:labeling",
                    "params:ingestion",
                ],
                outputs="snapshot_report",
                name="snapshot_dataset_version",
            )
        ]
    )
