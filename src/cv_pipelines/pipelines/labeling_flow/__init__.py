"""The labeling flow (seed 001): ingestion, then the labeling cycle; Airflow waits for CVAT between two cycles."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
