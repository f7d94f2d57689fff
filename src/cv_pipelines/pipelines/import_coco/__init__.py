"""``import_coco``: import an already-labeled folder of images + COCO boxes."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
