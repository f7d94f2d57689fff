from kedro.pipeline import Node, Pipeline

from .nodes import ingest_incoming_images


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                ingest_incoming_images,
                inputs="params:ingestion",
                outputs="ingestion_report",
                name="ingest_incoming_images",
            )
        ]
    )
