"""``ingestion``: move dropped images into the content-addressed store and registry."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
