"""The ``demo_data`` pipeline: one node that writes the synthetic demo images and their COCO file."""

from typing import Any

from kedro.pipeline import Node, Pipeline

from .nodes import generate_demo_data


def create_pipeline(**kwargs: Any) -> Pipeline:
    """The pipeline: the ``demo_dataset`` folder and ``params:demo_data`` in, the labeled folder (its record) out."""
    return Pipeline(
        [
            Node(
                generate_demo_data,
                inputs=["demo_dataset", "params:demo_data"],
                outputs="labeled_folder",
                name="generate_demo_data",
            )
        ]
    )
