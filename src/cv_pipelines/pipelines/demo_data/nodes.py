"""Nodes of the ``demo_data`` pipeline."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cv_pipelines.config.parameters import DemoDataParams
from cv_pipelines.config.resolvers import project_relative, project_root

logger = logging.getLogger(__name__)


def generate_demo_data(demo_dataset: Path, params: DemoDataParams) -> dict[str, Any]:
    """Write the demo images and their COCO file into ``demo_dataset``; returns a summary.

    Args:
        demo_dataset: the demo data set's folder (the ``demo_dataset`` entry).
        params: the ``demo_data`` parameters (size, seed, objects per image).

    Returns:
        Where the images and the COCO file are, and how many images and boxes they hold.
    """
    from cv_pipelines.demo.synthetic import generate_demo_dataset

    summary = generate_demo_dataset(
        demo_dataset,
        num_images=params.num_images,
        image_size=params.image_size,
        seed=params.seed,
        max_objects=params.max_objects,
        empty_fraction=params.empty_fraction,
    )
    root = project_root()
    logger.info(
        "Demo data: %d images, %d boxes in %s",
        summary.num_images,
        summary.num_boxes,
        project_relative(demo_dataset, root),
    )
    return {
        "images_dir": project_relative(summary.images_dir, root),
        "annotations_file": project_relative(summary.annotations_file, root),
        "num_images": summary.num_images,
        "num_boxes": summary.num_boxes,
        "boxes_per_class": dict(summary.boxes_per_class),
        "seed": params.seed,
    }
