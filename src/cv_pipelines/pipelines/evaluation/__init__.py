"""``evaluation``: evaluate a trained model on the export's frozen test split."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
