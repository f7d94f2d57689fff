"""``labeling``: batches of unlabeled images, CVAT tasks, annotation pulls."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
