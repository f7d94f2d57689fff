"""``snapshot``: version the store and registries with DVC, commit and tag a dataset version."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
