"""A fast command line: kedro-mlflow (and MLflow) are loaded only for the commands and pipelines that use them.

Real processes where the process is what is proven (which modules a ``kedro`` command
imported); ``bench/bench_cli.py`` measures the start-up times themselves.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import click

from tests.conftest import project_env
from tests.support.images import image_bytes, write
from tests.support.mlflow_store import STORE

#: ``kedro <args>`` as bin/kedro runs it; its last line: the type of the module under kedro-mlflow's
#: CLI name (``_CliStandIn`` or ``module``), then the other MLflow and kedro-mlflow modules imported.
DRIVER = (
    "import sys\n"
    "from kedro.framework.cli import main\n"
    "sys.argv = ['kedro', *sys.argv[1:]]\n"
    "status = 0\n"
    "try:\n"
    "    main()\n"
    "except SystemExit as exit:\n"
    "    status = exit.code\n"
    "cli = type(sys.modules.get('kedro_mlflow.framework.cli.cli')).__name__\n"
    "loaded = [m for m in sys.modules if m == 'mlflow' or m.startswith(('mlflow.', 'kedro_mlflow.'))]\n"
    "print('\\nLOADED', cli, *(m for m in loaded if m != 'kedro_mlflow.framework.cli.cli'))\n"
    "sys.exit(status)\n"
)


def kedro(root: Path, *args: str) -> tuple[subprocess.CompletedProcess, str, set[str]]:
    completed = subprocess.run(
        [sys.executable, "-c", DRIVER, *args], cwd=root, env=project_env(root), capture_output=True, text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    last = completed.stdout.splitlines()[-1].split()
    assert last[0] == "LOADED", completed.stdout[-2000:]
    return completed, last[1], set(last[2:])


def coco_set(root: Path) -> Path:
    """Two images with boxes of the demo's labels, as a COCO folder."""
    folder = root / "coco"
    write(folder / "images/a.jpg", image_bytes(1, size=(64, 48)))
    write(folder / "images/b.jpg", image_bytes(2, size=(64, 48)))
    coco = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
            {"id": 2, "file_name": "b.jpg", "width": 64, "height": 48},
        ],
        "categories": [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 2, "bbox": [30, 10, 16, 16], "area": 256, "iscrowd": 0},
        ],
    }
    write(folder / "annotations/instances_default.json", json.dumps(coco).encode())
    return folder


def test_an_untracked_kedro_run_imports_no_mlflow_and_a_tracked_one_still_tracks(project, tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{project / STORE}")
    untracked, _, loaded = kedro(project, "run", "--pipelines", "ingestion")
    assert "Ingestion of data/incoming: nothing to ingest" in untracked.stderr  # the run went to its end
    assert not {"mlflow", "kedro_mlflow.framework.hooks.mlflow_hook"} & loaded, loaded
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []

    folder = coco_set(tmp_path)
    _, _, loaded = kedro(project, "run", "--pipelines", "import_coco", "--params", f"import_coco.source={folder}")
    assert {"mlflow", "kedro_mlflow.framework.hooks.mlflow_hook"} <= loaded
    (run,) = client.search_runs([client.get_experiment_by_name("cv_pipelines").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "import_coco"
    assert run.data.params["import_coco.source"] == str(folder)  # typed parameters, logged by key
    assert run.data.tags["kedro_command"] == "kedro run --pipeline=import_coco"


def test_help_and_registry_list_import_no_mlflow_and_kedro_mlflow_commands_still_answer(project):
    help_, cli, loaded = kedro(project, "--help")
    assert (cli, loaded) == ("_CliStandIn", set())
    assert "Project specific commands from Mlflow" in help_.stdout
    assert re.search(r"^  mlflow +Use mlflow-specific commands inside kedro project\.$", help_.stdout, re.M)
    listed, cli, loaded = kedro(project, "registry", "list")
    assert "- ingestion" in listed.stdout and (cli, loaded) == ("_CliStandIn", set())
    # kedro-mlflow's own commands, loaded on demand: its group, its help, its subcommands.
    plugin, cli, loaded = kedro(project, "mlflow", "--help")
    assert cli == "module" and "mlflow" in loaded
    for name in ("init", "modelify", "ui"):
        assert f"  {name} " in plugin.stdout


def test_the_stand_in_says_what_kedro_mlflow_says():
    """Its group and help are kedro-mlflow's own: an upgrade that changes them fails here."""
    from cv_pipelines.config import mlflow_plugin

    real = mlflow_plugin.real_kedro_mlflow_cli()
    assert real.__name__ == mlflow_plugin.KEDRO_MLFLOW_CLI and hasattr(real, "KedroClickGroup")
    group = real.commands
    assert (group.name, group.help) == ("Mlflow", mlflow_plugin._GROUP_HELP)
    assert list(group.commands) == ["mlflow"] and isinstance(group.commands["mlflow"], click.Group)
    assert group.commands["mlflow"].help == mlflow_plugin._MLFLOW_HELP


def test_an_untracked_pipeline_with_kedro_mlflow_datasets_gets_kedro_mlflow_before_its_checks(project):
    """Listed as untracked, evaluation still has Mlflow* datasets and its check reads runs through MLflow:
    kedro-mlflow is set up (the project's store) once the catalog exists, before the checks, as before."""
    import mlflow

    from tests.support.cli import kedro_cli

    yml = project / "conf/base/mlflow.yml"
    untracked = "[ingestion, demo_data, labeling, snapshot, labeling_flow]"
    assert untracked in yml.read_text()
    yml.write_text(yml.read_text().replace(untracked, "[ingestion, demo_data, labeling, snapshot, evaluation]"))
    result = kedro_cli(project, "run", "--pipelines", "evaluation")
    assert result.exit_code == 2, result.output
    assert "no training has run in this project yet" in result.stderr
    assert mlflow.get_tracking_uri() == f"sqlite:///{project / STORE}"
    assert not (project / "mlflow.db").exists() and not (project / "mlruns").exists()
