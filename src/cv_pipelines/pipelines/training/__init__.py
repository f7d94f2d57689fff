"""``training``: train Ultralytics YOLO on an export, tracked by kedro-mlflow."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
