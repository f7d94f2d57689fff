"""Wiring of the ``training_flow`` pipeline: ``export``, ``training``, ``evaluation``, ``deployment``, one namespace each."""

from kedro.pipeline import Pipeline

from cv_pipelines.pipelines import deployment, evaluation, export, training
from cv_pipelines.pipelines.flows import flow_pipeline


def create_pipeline(**kwargs) -> Pipeline:
    """The registries at ``dataset_version`` to a YOLO export, a trained and evaluated model, and the gate."""
    return flow_pipeline(
        {
            "export": export.create_pipeline,
            "training": training.create_pipeline,
            "evaluation": evaluation.create_pipeline,
            "deployment": deployment.create_pipeline,
        }
    )
