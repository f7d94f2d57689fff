"""Wiring of the ``matrix`` pipeline, generated from ``matrix.candidates``.

One namespace ``matrix.<candidate>`` per candidate (train -> evaluate), then one
leaderboard over all of them. A candidate's nodes depend on parameters only, so Kedro's
filters run any subset on its own (``--namespaces matrix.yolov8n``, ``--tags
candidate_yolov8n``); the leaderboard needs every candidate's result, so a subset with
a leaderboard is chosen with ``matrix.only`` / ``matrix.exclude`` (the others report
"skipped"). The candidates are read when Kedro registers the
pipelines (``conf/base`` plus ``KEDRO_ENV``), since that happens before ``--env`` is
known; their parameters are read again by the nodes from the run's own configuration.
"""

import inspect
from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline, pipeline

from cv_pipelines.models.matrix import candidate_names, namespace_of, registration_parameters

from .nodes import check_required, evaluate_candidate, rank_candidates, train_candidate


def _bound(function, name: str):
    # A partial keeps the candidate's name; update_wrapper keeps the function's name
    # and docstring for kedro-viz, and partials of module functions pickle (ParallelRunner).
    bound = partial(function, name)
    signature = inspect.signature(bound)  # without `name`: Kedro maps the inputs onto this
    wrapped = update_wrapper(bound, function)
    # update_wrapper's __wrapped__ would make inspect report the signature with `name`, so
    # Kedro's parameter validation would pair each input with the argument before it.
    wrapped.__signature__ = signature  # type: ignore[attr-defined]
    return wrapped


def candidate_pipeline(name: str) -> Pipeline:
    """Train -> evaluate for candidate ``name``, in its namespace ``matrix.<name>``."""
    template = Pipeline(
        [
            Node(
                _bound(train_candidate, name),
                inputs=["yolo_export", "training_runs", "params:training", "params:matrix"],
                outputs="trained",
                name="train",
                tags=["matrix_candidate", f"candidate_{name}"],
            ),
            Node(
                _bound(evaluate_candidate, name),
                inputs=["trained", "params:evaluation"],
                outputs="result",
                name="evaluate",
                tags=["matrix_candidate", f"candidate_{name}"],
            ),
        ]
    )
    return pipeline(
        template,
        namespace=namespace_of(name),
        inputs={"yolo_export", "training_runs"},
        parameters={"params:training", "params:matrix", "params:evaluation"},
    )


def create_pipeline(**kwargs) -> Pipeline:
    """One namespace per candidate of ``matrix.candidates``, then the leaderboard over them all."""
    names = candidate_names(registration_parameters().get("matrix") or {})
    candidates = sum((candidate_pipeline(name) for name in names), Pipeline([]))
    leaderboard = Pipeline(
        [
            Node(
                rank_candidates,
                inputs=["params:matrix", *(f"result_{name}" for name in names)],
                outputs=["matrix_leaderboard", "matrix_leaderboard_plot", "matrix_summary"],
                name="rank_candidates",
            ),
            Node(check_required, inputs=["matrix_summary", "params:matrix"], outputs=None, name="check_required"),
        ]
    )
    # In the matrix namespace, reading each candidate's `matrix.<name>.result`; its own
    # outputs keep their catalog names.
    leaderboard = pipeline(
        leaderboard,
        namespace="matrix",
        inputs={f"result_{name}": f"{namespace_of(name)}.result" for name in names},
        outputs={"matrix_leaderboard", "matrix_leaderboard_plot", "matrix_summary"},
        parameters={"params:matrix"},
    )
    return candidates + leaderboard
