"""Wiring of the ``ingestion`` pipeline: drop zone -> checks -> plan -> image store -> report."""

from kedro.pipeline import Node, Pipeline

from .nodes import check_incoming_images, plan_incoming_images, report_ingestion


def create_pipeline(**kwargs) -> Pipeline:
    """``new_images`` (the drop zone) into ``images_registry`` (the store), and the report."""
    return Pipeline(
        [
            Node(
                check_incoming_images,
                inputs=["new_images", "params:ingestion"],
                outputs="checked_incoming_images",
                name="check_incoming_images",
            ),
            Node(
                plan_incoming_images,
                inputs=["checked_incoming_images", "params:ingestion"],
                outputs=["images_registry", "ingestion_plan"],
                name="plan_incoming_images",
            ),
            Node(
                report_ingestion,
                inputs=["ingestion_plan", "images_registry"],
                outputs="ingestion_report",
                name="report_ingestion",
            ),
        ]
    )
