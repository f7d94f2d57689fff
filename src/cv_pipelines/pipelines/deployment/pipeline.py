"""Wiring of the ``deployment`` pipeline: evaluated model -> packaged, registered, gated."""

from kedro.pipeline import Node, Pipeline

from .nodes import check_serving_parity, package_model, register_model


def create_pipeline(**kwargs) -> Pipeline:
    """``evaluated_model`` -> ``packaged_model`` (logged in the run) -> ``serving_parity`` -> a registered version, gated."""
    return Pipeline(
        [
            Node(
                package_model,
                inputs=["evaluated_model", "deployment_runs", "params:deployment"],
                outputs="packaged_model",
                name="package_model",
            ),
            Node(
                check_serving_parity,
                inputs=["packaged_model", "evaluated_model", "params:deployment"],
                outputs="serving_parity",
                name="check_serving_parity",
            ),
            Node(
                register_model,
                inputs=["packaged_model", "serving_parity", "evaluated_model", "params:deployment"],
                outputs="deployment_summary",
                name="register_model",
            ),
        ]
    )
