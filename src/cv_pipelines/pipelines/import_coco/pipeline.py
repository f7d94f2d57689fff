from kedro.pipeline import Node, Pipeline

from .nodes import import_labeled_coco_folder


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                import_labeled_coco_folder,
                inputs=["params:import_coco", "params:labeling", "params:ingestion"],
                outputs="coco_import_summary",
                name="import_labeled_coco_folder",
            )
        ]
    )
