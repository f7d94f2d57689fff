"""Wiring of the ``training`` pipeline: export + run folder -> Ultralytics training -> trained model, metrics."""

from kedro.pipeline import Node, Pipeline

from .nodes import prepare_training, train_model


def create_pipeline(**kwargs) -> Pipeline:
    """``yolo_export`` -> ``trained_model`` (and ``training_metrics``), one MLflow run."""
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
                outputs=["training_metrics", "trained_model"],
                name="train_model",
            ),
        ]
    )
