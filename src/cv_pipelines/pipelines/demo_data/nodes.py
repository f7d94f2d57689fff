"""Nodes of the ``demo_data`` pipeline."""

from __future__ import annotations

import logging
from typing import Any

from cv_pipelines.config.resolvers import project_root

logger = logging.getLogger(__name__)


def generate_demo_data(params: dict[str, Any]) -> dict[str, Any]:
    """Write the demo images and their COCO file; returns a summary for the catalog."""
    from cv_pipelines.demo.synthetic import generate_demo_dataset

    output_dir = project_root() / params["output_dir"]
    summary = generate_demo_dataset(
        output_dir,
        num_images=params["num_images"],
        image_size=params["image_size"],
        seed=params["seed"],
        max_objects=params["max_objects"],
        empty_fraction=params["empty_fraction"],
    )
    logger.info(
        "Demo data: %d images, %d boxes in %s",
        summary.num_images,
        summary.num_boxes,
        params["output_dir"],
    )
    return {
        "images_dir": str(summary.images_dir.relative_to(project_root())),
        "annotations_file": str(summary.annotations_file.relative_to(project_root())),
        "num_images": summary.num_images,
        "num_boxes": summary.num_boxes,
        "boxes_per_class": dict(summary.boxes_per_class),
        "seed": params["seed"],
    }
