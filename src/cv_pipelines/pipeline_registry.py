"""Every folder under ``pipelines/`` is a pipeline named after it."""

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline


def register_pipelines() -> dict[str, Pipeline]:
    """Each pipeline under ``pipelines/`` by its folder name, and ``__default__``: all of them together.

    A pipeline that fails to import stops the registration with its error
    (``raise_errors=True``) instead of silently missing from ``kedro run``.
    """
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    return pipelines
