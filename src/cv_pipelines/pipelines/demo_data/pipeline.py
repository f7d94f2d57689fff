"""Wiring of the ``demo_data`` pipeline."""

from kedro.pipeline import Node, Pipeline

from .nodes import generate_demo_data


def create_pipeline(**kwargs) -> Pipeline:
    """Generate the demo data set into the ``demo_dataset`` folder."""
    return Pipeline(
        [
            Node(
                generate_demo_data,
                inputs=["demo_dataset", "params:demo_data"],
                outputs="demo_dataset_summary",
                name="generate_demo_data",
            )
        ]
    )
