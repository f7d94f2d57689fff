"""Wiring of the ``import_coco`` pipeline: COCO folder -> image store -> annotations and labels."""

from kedro.pipeline import Node, Pipeline

from .nodes import plan_coco_images, read_coco_folder, register_coco_boxes


def create_pipeline(**kwargs) -> Pipeline:
    """``labeled_folder`` (``import_coco.source``, else the demo data set) into ``coco_images`` (the store), ``annotations_registry`` and ``labels_registry``.

    ``label_sets_registry`` gives the label set's recorded classes; classes the import
    adds are saved as ``coco_label_sets`` (the same registry: a dataset has one writer,
    and the first node reads it before the last one writes).
    """
    return Pipeline(
        [
            Node(
                read_coco_folder,
                inputs=["labeled_folder", "params:import_coco", "params:labeling", "label_sets_registry"],
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
                inputs=["coco_source", "coco_image_plan", "coco_images", "params:import_coco"],
                outputs=["coco_label_sets", "annotations_registry", "labels_registry", "coco_import_summary"],
                name="register_coco_boxes",
            ),
        ]
    )
