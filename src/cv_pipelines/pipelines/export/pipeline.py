"""Wiring of the ``export`` pipeline: registries -> selection -> health -> ``yolo_export`` -> summary, sample."""

from kedro.pipeline import Node, Pipeline

from .nodes import draw_export_sample, export_yolo_dataset, report_export_health, select_export_images, summarize_export


def create_pipeline(**kwargs) -> Pipeline:
    """The export pipeline; its ``yolo_export`` output is what training and evaluation read."""
    return Pipeline(
        [
            Node(
                select_export_images,
                inputs=[
                    "images_registry",
                    "annotations_registry",
                    "labels_registry",
                    "exclusions_registry",
                    "label_sets_registry",
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
                inputs=["export_selection", "export_health_files", "params:dataset_version"],
                outputs="yolo_export",
                name="export_yolo_dataset",
            ),
            Node(summarize_export, inputs="yolo_export", outputs="export_summary", name="summarize_export"),
            Node(draw_export_sample, inputs="yolo_export", outputs="export_sample_images", name="draw_export_sample"),
        ]
    )
