"""Every folder under ``pipelines/`` is a pipeline named after it; ``__default__`` is the whole loop."""

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

#: What ``kedro run`` (and ``make demo``) runs, in the order of the data: the demo data set in,
#: through the store, registries and a dataset version, to a gated, registered model.
#: Labeling needs annotators in CVAT, and the matrix trains many candidates, so both run on
#: request (``--pipelines labeling``, ``--pipelines matrix``) over the same catalog.
LOOP = ("demo_data", "ingestion", "import_coco", "snapshot", "export", "training", "evaluation", "deployment")


def register_pipelines() -> dict[str, Pipeline]:
    """The pipelines by name, and ``__default__``: the loop of ``LOOP`` as one graph."""
    pipelines = find_pipelines(raise_errors=True)
    # `kedro run --pipelines X` imports only pipelines/X: the loop is built from what is there.
    pipelines["__default__"] = sum((pipelines[name] for name in LOOP if name in pipelines), Pipeline([]))
    return pipelines
