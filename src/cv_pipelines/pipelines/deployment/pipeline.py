"""Wiring of the ``deployment`` pipeline: evaluated model -> packaged, registered, gated."""

from kedro.pipeline import Node, Pipeline

from .nodes import deploy_model


def create_pipeline(**kwargs) -> Pipeline:
    """``evaluated_model`` (with its verdict) -> a registered model version, gated; ``deployment_summary``."""
    return Pipeline(
        [
            Node(
                deploy_model,
                inputs=["evaluated_model", "deployment_runs", "params:deployment"],
                outputs="deployment_summary",
                name="deploy_model",
            ),
        ]
    )
