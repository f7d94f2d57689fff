"""``deployment``: package, register and gate the evaluated model (or roll back)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
