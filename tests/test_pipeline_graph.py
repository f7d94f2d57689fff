"""The shape of the pipelines as Kedro sees them: ``__default__`` is the loop, one connected graph.

Checked on the pipeline objects (not on kedro-viz's pixels): datasets and nodes form one
component once parameters are left out, a directed path of datasets and nodes leads
from the images registry to the registered model, and every dataset a pipeline reads is
written by another pipeline, or is raw input, parameters or a service connection.
"""

from __future__ import annotations

from collections import defaultdict

import pytest

#: Read by pipelines and written by none: what the outside world brings in, and the places
#: where a tool writes files of its own (Ultralytics' run folders, the store's layout).
RAW_INPUTS = {
    "new_images",  # the drop zone
    "cvat_connection",  # the CVAT server (credentials)
    "champion_model",  # the model registry's @champion, moved by the deployment's gate
}
#: Registries a pipeline reads before it writes them, written under a name of their own
#: (a node cannot read what a later node of its own pipeline writes): read by the first
#: name, written as the second, one folder.
WRITTEN_AS = {"label_sets_registry": "coco_label_sets"}
PLACES = {
    "demo_dataset", "image_store", "labeling_batches", "cvat_cache",
    "training_runs", "evaluation_runs", "deployment_runs",
}


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    from kedro.framework.project import pipelines
    from kedro.framework.startup import bootstrap_project

    from tests.conftest import make_project_copy

    root = make_project_copy(tmp_path_factory.mktemp("graph") / "project")
    bootstrap_project(root)
    return {name: pipelines[name] for name in pipelines}


def _is_data(name: str) -> bool:
    return not (name == "parameters" or name.startswith("params:"))


def _components(pipeline) -> list[set[str]]:
    """Connected components of nodes and datasets, parameters left out (they join everything)."""
    neighbours: dict[str, set[str]] = defaultdict(set)
    for node in pipeline.nodes:
        neighbours[f"node:{node.name}"]
        for dataset in filter(_is_data, [*node.inputs, *node.outputs]):
            neighbours[f"node:{node.name}"].add(dataset)
            neighbours[dataset].add(f"node:{node.name}")
    seen: set[str] = set()
    components = []
    for start in neighbours:
        if start in seen:
            continue
        component, frontier = set(), [start]
        while frontier:
            vertex = frontier.pop()
            if vertex not in component:
                component.add(vertex)
                frontier.extend(neighbours[vertex] - component)
        seen |= component
        components.append(component)
    return components


def _reachable(pipeline, start: str) -> set[str]:
    """Datasets reachable from ``start`` along data flow (dataset -> node -> its outputs)."""
    reached, frontier = {start}, [start]
    while frontier:
        dataset = frontier.pop()
        for node in pipeline.nodes:
            if dataset in node.inputs:
                for output in set(node.outputs) - reached:
                    reached.add(output)
                    frontier.append(output)
    return reached


def test_the_default_pipeline_is_the_whole_loop_as_one_connected_graph(registered):
    default = registered["__default__"]
    for name in ("demo_data", "ingestion", "import_coco", "snapshot", "export", "training", "evaluation", "deployment"):
        assert set(registered[name].nodes) <= set(default.nodes), name
    components = _components(default)
    assert len(components) == 1, [sorted(c)[:6] for c in components]
    assert "deployment_summary" in _reachable(default, "images_registry")


def test_labeling_joins_the_same_graph(registered):
    with_labeling = registered["__default__"] + registered["labeling"]
    assert len(_components(with_labeling)) == 1


def test_every_dataset_a_pipeline_reads_is_written_by_another_or_is_raw_input(registered):
    written = {output for pipeline in registered.values() for node in pipeline.nodes for output in node.outputs}
    written |= {name for name, alias in WRITTEN_AS.items() if alias in written}
    for name, pipeline in registered.items():
        unwritten = {d for d in pipeline.inputs() if _is_data(d)} - written - RAW_INPUTS - PLACES
        assert not unwritten, f"pipeline {name} reads {sorted(unwritten)}, which no pipeline writes"


def test_every_node_gets_its_parameters_as_the_sections_model(registered):
    """A node reading ``params:<section>`` is typed with that section's pydantic model, which Kedro
    then builds from the configuration: no node validates a dict itself."""
    from kedro.validation.type_extractor import TypeExtractor

    from cv_pipelines.config.parameters import ProjectParams

    typed = TypeExtractor(registered).extract_types_from_pipelines()
    sections = {
        name.split(":", 1)[1]
        for pipeline in registered.values()
        for node in pipeline.nodes
        for name in node.inputs
        if name.startswith("params:")
    }
    expected = {
        section: ProjectParams.model_fields[section].annotation
        for section in sections
        if section in ProjectParams.model_fields and section != "dataset_version"
    }
    assert expected and {section: typed.get(section) for section in expected} == expected


def test_a_registry_written_under_another_name_is_the_same_folder():
    import yaml

    from tests.conftest import REPO_ROOT

    catalog = yaml.safe_load((REPO_ROOT / "conf/base/catalog.yml").read_text())
    for name, alias in WRITTEN_AS.items():
        registry = name.removesuffix("_registry")
        assert catalog["{name}_registry"]["path"].replace("{name}", registry) == catalog[alias]["path"], name
