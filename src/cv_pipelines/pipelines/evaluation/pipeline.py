"""Wiring of the ``evaluation`` pipeline: training run (+ champion) -> test split -> report."""

from kedro.pipeline import Node, Pipeline

from .nodes import evaluate_models, select_models


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                select_models,
                # training_summary: the latest training, and inside `--pipelines
                # training,evaluation` the edge that runs evaluation after training.
                inputs=["training_summary", "params:evaluation", "params:export", "params:deployment"],
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
                    "evaluation_summary",
                ],
                name="evaluate_models",
            ),
        ]
    )
