"""The training flow (seed 001): a dataset version's export, a training, its evaluation and the deployment gate."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
