"""Wiring of the ``training`` pipeline: export + run folder -> Ultralytics training -> trained model."""

from kedro.pipeline import Node, Pipeline

from .nodes import prepare_training, train_model


def create_pipeline(**kwargs) -> Pipeline:
    """``yolo_export`` -> ``trained_model``, one MLflow run (per-epoch metrics logged into it as training goes)."""
    return Pipeline(
        [
            Node(
                prepare_training,
                inputs=["yolo_export", "training_runs", "params:training"],
                outputs="training_plan",
                name="prepare_training",
            ),
            Node(
                train_model,
                inputs=["training_plan", "params:training"],
                outputs="trained_model",
                name="train_model",
            ),
        ]
    )
