"""Wiring of the ``evaluation`` pipeline: trained model (+ champion) -> frozen test split -> report."""

from kedro.pipeline import Node, Pipeline

from .nodes import evaluate_models, select_models


def create_pipeline(**kwargs) -> Pipeline:
    """``trained_model`` and ``champion_model`` -> metrics, plots, worst images and ``evaluated_model`` (the verdict)."""
    return Pipeline(
        [
            Node(
                select_models,
                inputs=["trained_model", "champion_model", "evaluation_runs", "params:evaluation"],
                outputs="evaluation_plan",
                name="select_models",
            ),
            Node(
                evaluate_models,
                inputs=["evaluation_plan", "params:evaluation"],
                outputs=[
                    "evaluation_metrics",
                    "evaluation_per_class",
                    "evaluation_worst_images",
                    "evaluation_confusion_matrix",
                    "evaluation_pr_curve",
                    "evaluation_per_class_plot",
                    "evaluated_model",
                ],
                name="evaluate_models",
            ),
        ]
    )
