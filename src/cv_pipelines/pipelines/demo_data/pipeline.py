from kedro.pipeline import Node, Pipeline

from .nodes import generate_demo_data


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                generate_demo_data,
                inputs="params:demo_data",
                outputs="demo_dataset_summary",
                name="generate_demo_data",
            )
        ]
    )
