"""``demo_data``: generate the synthetic demo data set (images + COCO boxes)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
