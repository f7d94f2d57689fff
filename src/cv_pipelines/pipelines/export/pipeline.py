"""Wiring of the ``export`` pipeline: registries -> selection -> health report -> export -> sample picture."""

from kedro.pipeline import Node, Pipeline

from .nodes import draw_export_sample, export_yolo_dataset, report_export_health, select_export_images


def create_pipeline(**kwargs) -> Pipeline:
    """The export pipeline: registries in, a new (or the existing) export version out."""
    return Pipeline(
        [
            Node(
                select_export_images,
                inputs=[
                    "images_registry",
                    "annotations_registry",
                    "labels_registry",
                    "exclusions_registry",
                    "params:export",
                    "params:labeling",
                ],
                outputs="export_selection",
                name="select_export_images",
            ),
            Node(
                report_export_health,
                inputs="export_selection",
                outputs=["export_health_table", "export_health_plot", "export_health_files"],
                name="report_export_health",
            ),
            Node(
                export_yolo_dataset,
                inputs=["export_selection", "export_health_files", "params:export", "params:dataset_version"],
                outputs="export_summary",
                name="export_yolo_dataset",
            ),
            Node(
                draw_export_sample,
                inputs=["export_selection", "export_summary"],
                outputs="export_sample_images",
                name="draw_export_sample",
            ),
        ]
    )
