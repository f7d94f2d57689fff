"""Wiring of the ``training`` pipeline: export + device -> Ultralytics training -> metrics."""

from kedro.pipeline import Node, Pipeline

from .nodes import prepare_training, train_model


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                prepare_training,
                inputs=["params:training", "params:export"],
                outputs="training_plan",
                name="prepare_training",
            ),
            Node(
                train_model,
                inputs=["training_plan", "params:training"],
                outputs=["training_metrics", "training_summary"],
                name="train_model",
            ),
        ]
    )
