"""``export``: turn the registries into a versioned YOLO data set."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
