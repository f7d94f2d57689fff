from kedro.pipeline import Node, Pipeline

from .nodes import export_yolo_dataset


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                export_yolo_dataset,
                inputs=[
                    "images_registry",
                    "annotations_registry",
                    "labels_registry",
                    "exclusions_registry",
                    "params:export",
                    "params:labeling",
                    "params:dataset_version",
                ],
                outputs=["export_summary", "export_health_table", "export_health_plot"],
                name="export_yolo_dataset",
            )
        ]
    )
