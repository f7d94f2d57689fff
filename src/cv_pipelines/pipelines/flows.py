"""Flows: pipelines joined for an orchestrator (``kedro airflow create``, README "Scaling out").

Each pipeline of a flow is a namespace of it, so that kedro-airflow's ``--group-by
namespace`` makes one Airflow task of each pipeline: the way the main job runs them (one
Kedro session and one MLflow run each), and no in-memory dataset crosses a task
boundary. The namespaces leave dataset and parameter names as they are, so a flow reads
and writes the catalog exactly as its pipelines run one by one do.
"""

from collections.abc import Callable

from kedro.pipeline import Pipeline


def flow_pipeline(steps: dict[str, Callable[..., Pipeline]]) -> Pipeline:
    """The pipelines made by ``steps`` (name -> ``create_pipeline``), each in a namespace of its name."""
    return sum(
        (Pipeline(create(), namespace=name, prefix_datasets_with_namespace=False) for name, create in steps.items()),
        Pipeline([]),
    )
