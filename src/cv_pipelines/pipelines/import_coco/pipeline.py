"""Wiring of the ``import_coco`` pipeline: COCO folder -> image store -> annotations and labels."""

from kedro.pipeline import Node, Pipeline

from .nodes import plan_coco_images, read_coco_folder, register_coco_boxes


def create_pipeline(**kwargs) -> Pipeline:
    """``labeled_folder`` (``import_coco.source``, else the demo data set) into ``coco_images`` (the store), ``annotations_registry`` and ``labels_registry``."""
    return Pipeline(
        [
            Node(
                read_coco_folder,
                inputs=["labeled_folder", "params:import_coco", "params:labeling"],
                outputs="coco_source",
                name="read_coco_folder",
            ),
            Node(
                plan_coco_images,
                inputs=["coco_source", "params:ingestion"],
                outputs=["coco_images", "coco_image_plan"],
                name="plan_coco_images",
            ),
            Node(
                register_coco_boxes,
                inputs=["coco_source", "coco_image_plan", "coco_images", "params:import_coco", "params:labeling"],
                outputs=["annotations_registry", "labels_registry", "coco_import_summary"],
                name="register_coco_boxes",
            ),
        ]
    )
