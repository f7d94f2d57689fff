"""``deployment``: register, gate and serve the evaluated model."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
