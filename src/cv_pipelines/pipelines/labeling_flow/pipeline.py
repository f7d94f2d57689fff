"""Wiring of the ``labeling_flow`` pipeline: ``ingestion`` then ``labeling``, one namespace each."""

from kedro.pipeline import Pipeline

from cv_pipelines.pipelines import ingestion, labeling
from cv_pipelines.pipelines.flows import flow_pipeline


def create_pipeline(**kwargs) -> Pipeline:
    """New images into the store, then a labeling cycle (pull what is annotated, open the next batch)."""
    return flow_pipeline({"ingestion": ingestion.create_pipeline, "labeling": labeling.create_pipeline})
