"""Wiring of the ``deployment`` pipeline: evaluated model -> packaged, registered, gated."""

from kedro.pipeline import Node, Pipeline

from .nodes import deploy_model


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                deploy_model,
                # evaluation_summary: the model to deploy, and inside `--pipelines
                # training,evaluation,deployment` the edge that runs deployment last.
                inputs=["evaluation_summary", "params:deployment", "params:export"],
                outputs="deployment_summary",
                name="deploy_model",
            ),
        ]
    )
