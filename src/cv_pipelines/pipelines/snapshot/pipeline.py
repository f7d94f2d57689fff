from kedro.pipeline import Node, Pipeline

from .nodes import snapshot_dataset_version


def create_pipeline(**kwargs) -> Pipeline:
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
