"""Jupyter as a person uses it: the tour notebook executed top to bottom in the kernel that
``kedro jupyter`` installs, ``kedro ipython`` with the project loaded, and ``kedro jupyter
lab`` serving that kernel, all in a throwaway project holding a demo export and two trainings
with their evaluations (shared with test_viz.py).

Kernels, servers and their homes live under pytest's temporary folder (JUPYTER_DATA_DIR and
friends), never in the user's ~/.local/share/jupyter; their outside requests go to a trap
proxy that refuses and records them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.request import urlopen

import nbformat
import pytest

from cv_pipelines.registries import parts as registry_parts
from tests.conftest import REPO_ROOT, project_env, run_kedro
from tests.support.projects import copy_project, mlflow_client, runs_of
from tests.test_viz import EXPECTED_PIPELINES, TrapProxy

NOTEBOOKS = REPO_ROOT / "notebooks"
TOUR = "01_tour.ipynb"
KERNEL = "kedro_cv_pipelines"  # what `kedro jupyter setup|notebook|lab` names the project's kernel
VENV_BIN = str(Path(sys.executable).parent)


def test_committed_notebooks_are_valid_and_have_no_outputs():
    notebooks = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert NOTEBOOKS / TOUR in notebooks
    for path in notebooks:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                # Outputs would put someone's data, paths and pictures into git, and rot.
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: strip the outputs"
        assert notebook.metadata.kernelspec.name == KERNEL, path.name
        assert "widgets" not in notebook.metadata, path.name


def jupyter_env(root: Path, home: Path, trap: TrapProxy) -> dict[str, str]:
    """The environment of an activated venv, with Jupyter's folders and proxies made private."""
    env = project_env(root, **trap.env())
    env.update({
        # `kedro ipython` runs the `ipython` on PATH: the venv's, as after `source .venv/bin/activate`.
        "PATH": VENV_BIN + os.pathsep + env.get("PATH", ""),
        "HOME": str(home),
        "JUPYTER_DATA_DIR": str(home / "jupyter-data"),
        "JUPYTER_CONFIG_DIR": str(home / "jupyter-config"),
        "JUPYTER_RUNTIME_DIR": str(home / "jupyter-runtime"),
        "IPYTHONDIR": str(home / "ipython"),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    })
    (home / "ipython").mkdir(parents=True, exist_ok=True)
    return env


@pytest.fixture(scope="module")
def tour_project(tmp_path_factory, trained_template) -> Path:
    """A copy of the session's trained project with the repository's notebooks in it (not a copy's usual part)."""
    root = copy_project(trained_template.root, tmp_path_factory.mktemp("tour") / "project")
    shutil.copytree(NOTEBOOKS, root / "notebooks")
    return root


@pytest.fixture
def trap():
    proxy = TrapProxy()
    yield proxy
    proxy.shutdown()
    proxy.server_close()


def text_of(cell) -> str:
    """What a reader sees of a cell's outputs, as text (streams, text/plain and HTML)."""
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts.append(output.data.get("text/html", "") + output.data.get("text/plain", ""))
        elif output.output_type == "error":
            parts.append(f"{output.ename}: {output.evalue}")
    return re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(parts))


def pictures_of(cell) -> int:
    return sum("image/png" in output.get("data", {}) for output in cell.get("outputs", []))


def cell_with(notebook, needle: str):
    [cell] = [c for c in notebook.cells if c.cell_type == "code" and needle in c.source]
    return cell


def test_tour_notebook_runs_top_to_bottom_in_the_kedro_kernel(tour_project, tmp_path, trap, monkeypatch):
    from nbclient import NotebookClient

    env = jupyter_env(tour_project, tmp_path / "home", trap)
    # The kernel every `kedro jupyter` command installs: the venv's Python with the Kedro extension.
    setup = run_kedro(tour_project, "jupyter", "setup", env=env, timeout=120)
    assert setup.returncode == 0, setup.stderr[-3000:]
    kernel = json.loads((tmp_path / "home/jupyter-data/kernels" / KERNEL / "kernel.json").read_text())
    # The same interpreter of the same venv (its bin folder compared resolved: a worktree may link its .venv).
    python, ours = Path(kernel["argv"][0]), Path(sys.executable)
    assert (python.name, python.parent.resolve()) == (ours.name, ours.parent.resolve())
    assert kernel["argv"][-2:] == ["--ext", "kedro.ipython"]

    # nbclient starts the kernel with this process's environment and finds it in JUPYTER_DATA_DIR.
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    notebook = nbformat.read(tour_project / "notebooks" / TOUR, as_version=4)
    client = NotebookClient(notebook, timeout=300, resources={"metadata": {"path": str(tour_project / "notebooks")}})
    champion_cell = next(i for i, c in enumerate(notebook.cells) if "champion" in c.metadata.get("tags", []))
    runs = runs_of(tour_project, "training")
    assert len(runs) == 2

    with client.setup_kernel():
        # Top to bottom, as *Run All* does; any exception fails here with the cell's traceback.
        for index, cell in enumerate(notebook.cells):
            client.execute_cell(cell, index)

        # The Kedro extension defined context, catalog and pipelines for this project.
        loaded = text_of(cell_with(notebook, 'print("project:'))
        assert f"project:   {tour_project}" in loaded
        assert all(name in loaded for name in EXPECTED_PIPELINES), loaded

        # The registries, as they are on disk.
        images = registry_parts.read_registry(tour_project / "data/registry/images")
        boxes = registry_parts.read_registry(tour_project / "data/registry/annotations")
        registries = text_of(cell_with(notebook, 'catalog.load("images_registry")'))
        assert f"{len(images)} images, {len(boxes)} boxes" in registries and "image_id" in registries
        per_class = text_of(cell_with(notebook, "per_class ="))
        assert all(label in per_class for label in boxes["label"].unique())

        # Six images with their boxes drawn, then the trainings' table and their curves.
        assert pictures_of(cell_with(notebook, "Rectangle((box.x_min")) == 1
        table = text_of(cell_with(notebook, "runs_table = pd.DataFrame"))
        assert all(run.info.run_id[:8] in table for run in runs), table
        assert pictures_of(cell_with(notebook, 'get_metric_history(run.info.run_id, "val/mAP50"), key')) == 1
        # Each training was evaluated (once in its own run, once in training,evaluation).
        # (asked of the kernel itself, in a cell added after the last one)
        check = nbformat.v4.new_code_cell("print(runs_table[['run', 'epochs', 'test/mAP50']].to_json(orient='records'))")
        notebook.cells.append(check)
        client.execute_cell(check, len(notebook.cells) - 1)
        rows = json.loads(text_of(check))
        assert {(row["run"], row["epochs"]) for row in rows} == {(r.info.run_id[:8], r.data.params["training.epochs"]) for r in runs}
        assert all(row["test/mAP50"] is not None for row in rows), rows

        # No model is registered yet, so no champion.
        assert "no champion yet" in text_of(notebook.cells[champion_cell])

        # Once the registry's alias points at the newest training's version, the cell shows it.
        mlflow = mlflow_client(tour_project)
        model_name = "cv_pipelines_detector"
        mlflow.create_registered_model(model_name)
        newest = runs[-1]
        version = mlflow.create_model_version(model_name, source=newest.info.artifact_uri, run_id=newest.info.run_id,
                                              tags={"training_run_id": newest.info.run_id})
        mlflow.set_registered_model_alias(model_name, "champion", version.version)
        client.execute_cell(notebook.cells[champion_cell], champion_cell)
        shown = text_of(notebook.cells[champion_cell])
        assert f"champion: {model_name} version {version.version}" in shown, shown
        assert f"training run: {newest.info.run_id}" in shown and "test/mAP50: None" not in shown

    assert trap.attempts == []  # the kernel asked nothing of the outside world


def test_plain_nbconvert_runs_the_tour_in_the_kernel_make_install_puts_into_the_venv(project, tmp_path, trap):
    """`jupyter nbconvert --execute` from the activated venv, no `kedro jupyter` run before: no NoSuchKernel.

    `make install` writes the kernel `kedro jupyter setup` writes into the venv's own
    Jupyter folder (its sys-prefix share/jupyter) instead of the user's. The test runs that
    recipe with a folder of its own for the venv's (the shared venv stays untouched), which
    nbconvert then searches through JUPYTER_PATH, as the venv's Jupyter searches its prefix;
    the user's Jupyter data folder stays empty. An empty project: the kernel is what is proven.
    """
    from jupyter_core.paths import ENV_JUPYTER_PATH

    recipe = re.search(r'^\tJUPYTER_DATA_DIR="\$\(abspath \$\(VENV\)\)/share/jupyter" \$\(BIN\)/kedro jupyter setup\b',
                       (REPO_ROOT / "Makefile").read_text(), re.MULTILINE)
    assert recipe, "make install no longer installs the kernel into the venv as this test does"
    assert str(Path(sys.prefix) / "share/jupyter") in ENV_JUPYTER_PATH  # where the venv's Jupyter looks

    shutil.copytree(NOTEBOOKS, project / "notebooks")
    env = jupyter_env(project, tmp_path / "home", trap)
    venv_share = tmp_path / "venv/share/jupyter"
    setup = run_kedro(project, "jupyter", "setup", env={**env, "JUPYTER_DATA_DIR": str(venv_share)}, timeout=120)
    assert setup.returncode == 0, setup.stderr[-3000:]
    kernel = json.loads((venv_share / "kernels" / KERNEL / "kernel.json").read_text())
    assert Path(kernel["argv"][0]).parent.resolve() == Path(sys.executable).parent.resolve()
    assert kernel["argv"][-2:] == ["--ext", "kedro.ipython"]

    env["JUPYTER_PATH"] = str(venv_share)
    out = tmp_path / "out"
    completed = subprocess.run(
        [str(Path(VENV_BIN) / "jupyter"), "nbconvert", "--to", "notebook", "--execute", f"notebooks/{TOUR}",
         "--output-dir", str(out)],
        cwd=project, env=env, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert not (tmp_path / "home/jupyter-data/kernels").exists()  # nothing installed for the user
    executed = nbformat.read(out / TOUR, as_version=4)
    assert f"project:   {project}" in text_of(cell_with(executed, 'print("project:'))
    assert "no champion yet" in text_of(next(c for c in executed.cells if "champion" in c.metadata.get("tags", [])))
    assert trap.attempts == []


def test_kedro_ipython_starts_with_the_project_loaded(tour_project, tmp_path, trap):
    env = jupyter_env(tour_project, tmp_path / "home", trap)
    script = "\n".join([
        "print('PIPELINES', sorted(pipelines))",
        "print('ROWS', len(catalog.load('images_registry')))",
        "print('CONTEXT', type(context).__name__, context.project_path)",
        "print('MLFLOW', context.mlflow.server.mlflow_tracking_uri)",
    ]) + "\n"
    kedro = Path(sys.executable).with_name("kedro")
    result = subprocess.run([str(kedro), "ipython", "--no-banner", "--colors=NoColor"], input=script, cwd=tour_project,
                            env=env, capture_output=True, text=True, timeout=180)
    out = result.stdout
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    images = registry_parts.read_registry(tour_project / "data/registry/images")
    assert f"ROWS {len(images)}" in out, out[-3000:] + result.stderr[-3000:]
    assert f"CONTEXT KedroContext {tour_project}" in out
    assert f"MLFLOW sqlite:///{tour_project}/data/mlflow/mlflow.db" in out
    pipelines = re.search(r"PIPELINES (\[.*\])", out).group(1)
    assert all(f"'{name}'" in pipelines for name in EXPECTED_PIPELINES)
    assert trap.attempts == []


def test_kedro_jupyter_lab_serves_the_project_kernel_and_notebook_resolves(tour_project, tmp_path, trap):
    env = jupyter_env(tour_project, tmp_path / "home", trap)
    kedro = str(Path(sys.executable).with_name("kedro"))
    # `kedro jupyter notebook` checks that `notebook` imports before it forwards --help to it.
    notebook = subprocess.run([kedro, "jupyter", "notebook", "--help"], cwd=tour_project, env=env,
                              capture_output=True, text=True, timeout=120)
    assert notebook.returncode == 0 and "Jupyter Notebook" in notebook.stdout, notebook.stderr[-3000:]

    token = "cv-pipelines-test"
    # As `make jupyter` starts it (its JupyterLab settings that ask PyPI nothing), on a free port.
    offline = re.search(r"^JUPYTER_OFFLINE := (.*)$", (REPO_ROOT / "Makefile").read_text(), re.MULTILINE).group(1)
    command = [kedro, "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", "--port=0", f"--IdentityProvider.token={token}",
               *offline.split()]
    if os.geteuid() == 0:
        command.append("--allow-root")  # Jupyter refuses root without it (CI containers run as root)
    log = tmp_path / "lab.log"
    with log.open("w") as sink:
        lab = subprocess.Popen(command, cwd=tour_project, env=env, stdout=sink, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (found := re.search(r"http://127\.0\.0\.1:(\d+)/lab", log.read_text())):
            assert lab.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.5)
        base = f"http://127.0.0.1:{found.group(1)}"
        specs = json.loads(urlopen(f"{base}/api/kernelspecs?token={token}", timeout=30).read())
        # Lab opens new notebooks in the project's kernel, the one that loads the Kedro extension.
        assert specs["default"] == KERNEL and KERNEL in specs["kernelspecs"], specs
        assert specs["kernelspecs"][KERNEL]["spec"]["argv"][-2:] == ["--ext", "kedro.ipython"]
        assert "JupyterLab" in urlopen(f"{base}/lab?token={token}", timeout=30).read().decode()
    finally:
        if lab.poll() is None:
            os.killpg(lab.pid, signal.SIGTERM)
            try:
                lab.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(lab.pid, signal.SIGKILL)
                lab.wait()
    assert trap.attempts == []
