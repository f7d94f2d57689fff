"""The foundation: project shape, offline defaults, and mistakes stopped before any work."""

from __future__ import annotations

import errno
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from cv_pipelines.errors import ConfigurationError
from cv_pipelines.labeling.cvat_connection import resolve_cvat_connection
from tests.conftest import NETGUARD_DIR, REPO_ROOT, copy_project, project_env, run_kedro
from tests.support.cli import kedro_cli
from tests.support.mlflow_store import STORE, cells_naming, relocate_mlflow_store
from tests.support.netguard.sitecustomize import NetworkGuardRefusal

SIX_PIPELINES = {"ingestion", "labeling", "export", "training", "evaluation", "deployment"}


def test_registry_lists_the_six_pipelines(project):
    completed = run_kedro(project, "registry", "list")
    assert completed.returncode == 0, completed.stderr
    listed = {line.removeprefix("- ").strip() for line in completed.stdout.splitlines() if line.startswith("- ")}
    assert listed >= SIX_PIPELINES
    for name in SIX_PIPELINES:
        package = REPO_ROOT / "src/cv_pipelines/pipelines" / name
        assert (package / "nodes.py").is_file() and (package / "pipeline.py").is_file()
        assert (REPO_ROOT / f"conf/base/parameters_{name}.yml").is_file()


def test_unknown_parameter_stops_with_one_sentence_before_any_work(project):
    """The real command's exit status and stderr for a ConfigurationError (the other mistakes run in-process)."""
    completed = run_kedro(project, "run", "--pipelines", "ingestion", "--params", "ingestion.drop_zon=elsewhere")
    assert completed.returncode == 2, completed.stderr
    assert "Unknown parameter 'ingestion.drop_zon'" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not (project / "data/registry").exists()


def test_missing_model_weights_stop_before_any_download(project, caplog):
    result = kedro_cli(project, "run", "--pipelines", "ingestion", "--params", "training.model=weights/best.pt", env=None)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # a one-sentence error, not a traceback
    assert "model weights 'weights/best.pt' do not exist" in result.stderr
    assert "yolov8n.yaml" in result.stderr  # the sentence names the fix
    assert "Downloading" not in result.output + caplog.text


def test_invalid_value_is_named_with_its_key(project):
    result = kedro_cli(project, "run", "--pipelines", "ingestion", "--params", "export.split_seed=abc", env=None)
    assert result.exit_code == 2, result.output
    assert "Parameter 'export.split_seed' is invalid" in result.stderr


def test_missing_cvat_credentials_stop_a_cvat_pipeline_before_it_starts(project):
    result = kedro_cli(project, "run", "--pipelines", "labeling")
    assert result.exit_code == 2, result.output
    assert re.search(r"No CVAT server is configured: .*conf/local/credentials.yml", result.stderr), result.output[-2000:]
    assert isinstance(result.exception, SystemExit)
    assert not (project / "data/registry").exists()  # not even the exclusions step ran
    # A pipeline that does not talk to CVAT needs no credentials.
    demo = kedro_cli(project, "run", "--pipelines", "demo_data")
    assert demo.exit_code == 0, demo.output


def test_cvat_credentials_from_file_and_environment_never_print_secrets():
    connection = resolve_cvat_connection({"host": "http://cvat.local", "access_token": "s3cr3t"}, environ={})
    assert connection.access_token.get_secret_value() == "s3cr3t"
    assert "s3cr3t" not in repr(connection) and "s3cr3t" not in str(connection)
    from_env = resolve_cvat_connection(
        {"host": "http://file", "username": "u", "password": "p"},
        environ={"CVAT_HOST": "http://env", "CVAT_ACCESS_TOKEN": "t0k"},
    )
    assert (from_env.host, from_env.access_token.get_secret_value(), from_env.username) == ("http://env", "t0k", None)
    with pytest.raises(ConfigurationError, match="No CVAT secret is configured for http://x"):
        resolve_cvat_connection({"host": "http://x"}, environ={})


def test_kedro_commands_never_add_telemetry_to_pyproject(project):
    before = (project / "pyproject.toml").read_bytes()
    env = project_env(project)
    for name in ("KEDRO_DISABLE_TELEMETRY", "DO_NOT_TRACK"):
        env.pop(name)  # the project's own files must keep telemetry off
    for args in (["registry", "list"], ["run", "--pipelines", "ingestion"]):
        completed = run_kedro(project, *args, env=env)
        assert completed.returncode == 0, completed.stderr
        assert "telemetry" not in completed.stderr.lower()
    after = (project / "pyproject.toml").read_bytes()
    assert after == before
    assert "kedro_telemetry" not in tomllib.loads(after.decode())["tool"]


def test_package_imports_no_heavy_library_at_module_level():
    # cv_pipelines.models.packaged_model is the MLflow model logged as code: MLflow loads it as a
    # file, and its class must subclass mlflow's PythonModel where it is defined. No
    # module of the package imports it (checked below), so no CLI start pays for it.
    importers = [p for p in (REPO_ROOT / "src/cv_pipelines").rglob("*.py")
                 if re.search(r"^\s*(from|import)\s+cv_pipelines\.packaged_model|from cv_pipelines import .*packaged_model",
                              p.read_text(), re.M)]
    assert importers == []
    code = (
        "import sys, importlib, pkgutil, cv_pipelines, cv_pipelines.pipelines as p\n"
        "from cv_pipelines.pipeline_registry import register_pipelines\n"
        "for m in pkgutil.walk_packages(cv_pipelines.__path__, 'cv_pipelines.'):\n"
        "    if m.name != 'cv_pipelines.models.packaged_model':\n"
        "        importlib.import_module(m.name)\n"
        "heavy = sorted(n for n in ('torch', 'ultralytics', 'mlflow', 'cvat_sdk', 'dvc', 'matplotlib') if n in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == ""


def test_ultralytics_settings_live_in_the_project_with_mlflow_off(project):
    code = (
        "from cv_pipelines.config.offline import apply_offline_defaults, ultralytics_settings_offline\n"
        "from pathlib import Path; import os\n"
        "os.environ.pop('YOLO_CONFIG_DIR', None)\n"
        "apply_offline_defaults(Path.cwd())\n"
        "ultralytics_settings_offline(Path.cwd())\n"
        "from ultralytics import settings; print(settings.file); print(settings['mlflow']); print(settings['runs_dir'])\n"
    )
    env = project_env(project)
    env.pop("YOLO_CONFIG_DIR")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=project, env=env)
    assert completed.returncode == 0, completed.stderr
    settings_file, mlflow_on, runs_dir = completed.stdout.split()[-3:]
    assert Path(settings_file).is_relative_to(project / ".ultralytics")
    assert mlflow_on == "False"
    assert Path(runs_dir).is_relative_to(project / "data")


def test_each_session_gets_its_own_mlflow_run_and_leaves_none_open(project, tmp_path):
    import mlflow

    from tests.conftest import run_pipeline
    from tests.test_import_coco import coco_folder

    folder, _ = coco_folder(tmp_path)
    for _ in range(2):
        run_pipeline(project, "import_coco", params={"import_coco": {"source": str(folder)}})
        assert mlflow.active_run() is None
    client = mlflow.MlflowClient(f"sqlite:///{project}/data/mlflow/mlflow.db")
    experiment = client.get_experiment_by_name("cv_pipelines")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    assert {run.info.status for run in runs} == {"FINISHED"}
    assert runs[0].data.params["import_coco.source"] == str(folder)


def test_a_run_the_checks_stop_leaves_no_mlflow_run_open(project):
    """The project's checks run before kedro-mlflow opens the run, so a stopped run leaves nothing open."""
    import mlflow

    from tests.conftest import run_pipeline

    with pytest.raises(ConfigurationError, match="training"):
        run_pipeline(project, "evaluation")  # nothing trained yet: stopped in before_pipeline_run
    assert mlflow.active_run() is None
    client = mlflow.MlflowClient(f"sqlite:///{project}/data/mlflow/mlflow.db")
    experiment = client.get_experiment_by_name("cv_pipelines")
    assert experiment is None or client.search_runs([experiment.experiment_id]) == []


def test_an_untracked_session_after_a_tracked_one_reopens_no_old_run(project, project_template, tmp_path, monkeypatch):
    """kedro-mlflow remembers the last run id process-wide; the project's hook forgets it."""
    import mlflow

    from tests.conftest import run_pipeline
    from tests.test_import_coco import coco_folder

    folder, _ = coco_folder(tmp_path)
    run_pipeline(project, "import_coco", params={"import_coco": {"source": str(folder)}})
    other = copy_project(project_template, tmp_path / "other")
    monkeypatch.setenv("CV_PIPELINES_PROJECT_ROOT", str(other))
    monkeypatch.chdir(other)
    run_pipeline(other, "ingestion")  # tracking disabled; must not touch the first run
    assert mlflow.active_run() is None
    client = mlflow.MlflowClient(f"sqlite:///{project}/data/mlflow/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("cv_pipelines").experiment_id])
    assert run.info.status == "FINISHED"


def test_every_default_lives_in_the_yml_and_nowhere_else():
    """conf/base/parameters_*.yml sets every parameter; the models only check them (no field has a default)."""
    from pydantic import BaseModel

    from cv_pipelines.config import parameters as models
    from cv_pipelines.config.loader import project_parameters

    def fields_with_defaults(model: type[BaseModel], prefix: str = ""):
        for name, field in model.model_fields.items():
            if not field.is_required():
                yield prefix + name
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                yield from fields_with_defaults(field.annotation, f"{prefix}{name}.")

    assert list(fields_with_defaults(models.ProjectParams)) == []
    base = project_parameters(root=REPO_ROOT)
    models.validate_parameters(base)  # every key the models require is in the yml
    del base["training"]["epochs"]
    with pytest.raises(ConfigurationError) as missing:
        models.validate_parameters(base)
    assert str(missing.value.message) == (
        "Parameter 'training.epochs' is missing: add it to conf/base/parameters_training.yml."
    )


def test_ingestion_import_labeling_and_snapshot_join_one_graph():
    """Each reads datasets another pipeline writes (not only parameters), and every registry has one writer."""
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(REPO_ROOT)
    from cv_pipelines.pipeline_registry import register_pipelines

    pipelines = register_pipelines()
    assert "images_registry" in pipelines["ingestion"].all_outputs()
    assert {"annotations_registry", "labels_registry"} <= pipelines["import_coco"].all_outputs()
    assert {"images_registry", "labels_registry"} <= pipelines["labeling"].inputs()
    assert {"images_registry", "labels_registry"} <= pipelines["snapshot"].inputs()
    assert "new_images" in pipelines["ingestion"].inputs() and "demo_dataset" in pipelines["demo_data"].inputs()
    for name in ("ingestion", "import_coco", "labeling", "snapshot", "demo_data"):
        assert not any(i.startswith("params:") and "registry" in i for i in pipelines[name].inputs())


def test_following_the_readme_credentials_step_breaks_no_kedro_command(project, caplog):
    """`cp conf/local/credentials.yml.example conf/local/credentials.yml` (the README's step) keeps
    every command working: Kedro loads `credentials*` files, so a loaded example would collide."""
    example = project / "conf/local/credentials.yml.example"
    assert example.is_file()
    (project / "conf/local/credentials.yml").write_text(example.read_text())
    result = kedro_cli(project, "registry", "list", env=None)
    assert result.exit_code == 0, result.output[-2000:]
    assert "Duplicate keys" not in result.stderr + caplog.text and "- ingestion" in result.stdout


#: TEST-NET-3 (RFC 5737): documentation addresses, never routed.
UNROUTED = ("203.0.113.1", 80)

_SUBPROCESS_PROBE = """
import socket, sys
for attempt in (lambda: socket.create_connection(("203.0.113.1", 80), timeout=5),
                lambda: socket.getaddrinfo("example.com", 443)):
    try:
        attempt()
        print("reached")
    except OSError as refused:
        print(type(refused).__name__, refused)
with socket.create_connection(("localhost", int(sys.argv[1])), timeout=5) as loopback:
    loopback.sendall(b"loopback works")
"""


def test_the_network_guard_refuses_beyond_loopback_here_and_in_subprocesses(tmp_path, network_refusals):
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        # In this process: refused before the real call, so the socket never started a
        # connection (a non-blocking connect that had sent a SYN would make the next one EALREADY).
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setblocking(False)
            started = time.perf_counter()
            with pytest.raises(NetworkGuardRefusal, match=re.escape("203.0.113.1")):
                sock.connect(UNROUTED)
            with pytest.raises(NetworkGuardRefusal):
                sock.connect_ex(UNROUTED)
            assert time.perf_counter() - started < 1
            assert sock.connect_ex(("127.0.0.1", port)) in (0, errno.EINPROGRESS)
            accepted, _ = server.accept()
            accepted.close()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for attempt in (
                lambda: socket.create_connection(UNROUTED, timeout=5),
                lambda: socket.getaddrinfo("example.com", 443),
                lambda: socket.gethostbyname("example.com"),
                lambda: udp.sendto(b"query", ("8.8.8.8", 53)),
            ):
                with pytest.raises(NetworkGuardRefusal):
                    attempt()
        with pytest.raises(socket.gaierror):  # an offline machine's error, for code that catches that one
            socket.getaddrinfo("example.com", 443)
        with socket.create_connection(("localhost", port), timeout=5) as client:
            client.sendall(b"ping")
            accepted, _ = server.accept()
            with accepted:
                assert accepted.recv(4) == b"ping"
        assert len(network_refusals.take()) == 7  # each one logged, for the test it happened in

        # In a subprocess, through the sitecustomize on PYTHONPATH (a PYTHONPATH given to
        # project_env comes after it, as the matrix tests give one).
        env = project_env(tmp_path, PYTHONPATH=str(REPO_ROOT))
        assert env["PYTHONPATH"].split(os.pathsep)[:2] == [str(NETGUARD_DIR), str(REPO_ROOT)]
        child = subprocess.Popen([sys.executable, "-c", _SUBPROCESS_PROBE, str(port)], env=env, cwd=tmp_path,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        server.settimeout(60)
        accepted, _ = server.accept()
        with accepted:
            assert accepted.recv(64) == b"loopback works"
        out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    refused = out.splitlines()
    assert len(refused) == 2, out
    assert refused[0].startswith("ConnectRefused") and "connecting to ('203.0.113.1', 80) refused" in refused[0]
    assert refused[1].startswith("LookupRefused") and "looking up 'example.com'" in refused[1]
    logged = network_refusals.take()
    assert [line.split(": ", 1)[1] for line in logged] == ["connecting to ('203.0.113.1', 80)", "looking up 'example.com' (port 443)"]


def test_a_copied_project_has_its_own_mlflow_store_naming_only_itself(project, tmp_path, monkeypatch):
    """The store records absolute paths (artifact folders, the export a run read): a copy names the copy."""
    import mlflow

    from tests.conftest import run_pipeline, use_project
    from tests.test_import_coco import coco_folder

    folder, _ = coco_folder(tmp_path)
    run_pipeline(project, "import_coco", params={"import_coco": {"source": str(folder)}})
    assert cells_naming(project / STORE, project)  # experiments, runs, tags name the project
    copy = use_project(copy_project(project, tmp_path / "copy"), monkeypatch)

    assert cells_naming(copy / STORE, project) == []
    client = mlflow.MlflowClient(f"sqlite:///{copy / STORE}")
    experiment = client.get_experiment_by_name("cv_pipelines")
    assert experiment.artifact_location == (copy / "data/mlflow/artifacts").as_uri()
    assert client.get_experiment_by_name("Default").artifact_location == str(copy / "mlruns/0")
    (first,) = client.search_runs([experiment.experiment_id])
    assert first.info.artifact_uri.startswith((copy / "data/mlflow/artifacts").as_uri() + "/")
    artifacts_before = sorted((project / "data/mlflow/artifacts").rglob("*"))
    run_pipeline(copy, "import_coco", params={"import_coco": {"source": str(folder)}})
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2 and all(run.info.artifact_uri.startswith(copy.as_uri()) for run in runs)
    assert sorted((project / "data/mlflow/artifacts").rglob("*")) == artifacts_before  # nothing written there

    # Only whole paths move: a sibling folder whose name starts with the root's stays as it is.
    with sqlite3.connect(copy / STORE) as db:
        db.execute("insert into experiment_tags (key, value, experiment_id) values ('sibling', ?, ?)",
                   (f"{copy}2/x", experiment.experiment_id))
    relocate_mlflow_store(copy / STORE, copy, tmp_path / "third")
    with sqlite3.connect(copy / STORE) as db:
        assert db.execute("select value from experiment_tags where key = 'sibling'").fetchall() == [(f"{copy}2/x",)]
    assert cells_naming(copy / STORE, tmp_path / "third")


def test_the_font_download_stays_off_while_any_thread_is_inside_the_context():
    """Parallel matrix candidates each enter ``no_font_download``; the first to leave must not turn it off."""
    import threading

    from ultralytics.data import utils as data_utils

    from cv_pipelines.config.offline import no_font_download

    original = data_utils.check_font
    inside, leave = threading.Event(), threading.Event()

    def other_candidate() -> None:
        with no_font_download():
            inside.set()
            leave.wait(timeout=30)

    thread = threading.Thread(target=other_candidate)
    with no_font_download():
        thread.start()
        assert inside.wait(timeout=30)
    assert data_utils.check_font is not original  # the other thread is still inside
    leave.set()
    thread.join(timeout=30)
    assert data_utils.check_font is original


# --- names that become folders and git tags (config.names) ---------------------------------

GOOD_NAMES = ["demo", "vehicles_v2", "a", "A-1.b", "0day", "x" * 100]
BAD_NAMES = [
    "../../../evil", "../x", "a/b", "a\\b", ".hidden", "-rf", "a..b", "x.", "x.lock", "con", "NUL.txt",
    "two words", "", "x" * 101, "caf\u00e9", "a:b", "a~1", "a^", "a@{1}", "a*", "a?", "a[b", "\x00", "tab\t",
]


def test_a_name_is_a_portable_file_name_and_a_git_ref_component(tmp_path):
    from cv_pipelines.config.names import check_name, name_problem

    for name in GOOD_NAMES:
        assert check_name(name) == name
        tag = subprocess.run(["git", "check-ref-format", f"data/{name}/v1"], capture_output=True)
        assert tag.returncode == 0, name
        (tmp_path / f"{name}_v1").mkdir()  # and a folder of that name stays where it was made
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{n}_v1" for n in GOOD_NAMES)
    refused = [name for name in BAD_NAMES if name_problem(name) is not None]
    assert refused == BAD_NAMES


def test_a_dataset_version_is_a_revision_that_names_no_path():
    from cv_pipelines.config.names import check_revision

    for revision in ("data/demo/v1", "HEAD", "HEAD~1", "data/demo/v2^", "0123abcd" * 5, "main"):
        assert check_revision(revision) == revision
    for revision in ("../x", "data/../x", "/etc", "data//v1", "-x", "data/demo/", "~1", "a b", "x.lock"):
        with pytest.raises(ValueError, match="is not a dataset version; give a tag such as 'data/demo/v1'"):
            check_revision(revision)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("labeling.label_set", "../../../evil"),
        ("export.label_set", "a/b"),
        ("import_coco.name", ".x"),
        ("import_coco.label_set", "-x"),
        ("evaluation.run_id", "../run"),
        ("deployment.model_name", "a..b"),
        ("snapshot.remote", "../remote"),
        ("dataset_version", "../x"),
    ],
)
def test_every_name_parameter_that_becomes_a_path_is_refused_with_its_key(key, value):
    from cv_pipelines.config.loader import project_parameters
    from cv_pipelines.config.parameters import validate_parameters

    params = project_parameters(root=REPO_ROOT)
    section, _, field = key.rpartition(".")
    (params[section] if section else params)[field] = value
    with pytest.raises(ConfigurationError) as refused:
        validate_parameters(params)
    sentence = str(refused.value.message)
    assert sentence.startswith(f"Parameter '{key}' is invalid: {value!r} ")
    assert "such as 'demo'" in sentence or "such as 'data/demo/v1'" in sentence  # the fix
    assert sentence.count(". ") == 0 and sentence.endswith(".")  # one sentence


def test_matrix_candidate_names_and_section_parameters_are_refused_alike():
    from cv_pipelines.config.loader import project_parameters, section_parameters
    from cv_pipelines.config.parameters import validate_parameters
    from cv_pipelines.errors import ParameterError

    params = project_parameters(root=REPO_ROOT)
    params["matrix"]["candidates"] = {"../x": {}}
    with pytest.raises(ConfigurationError, match=r"^Parameter 'matrix\.candidates\.\.\./x' is invalid: '\.\./x' "):
        validate_parameters(params)
    # Code outside a session (the main job, serving, scripts) reads sections the same way.
    with pytest.raises(ParameterError, match=r"^Parameter 'labeling\.label_set' is invalid: '\.\./x' cannot"):
        section_parameters("labeling", root=REPO_ROOT, label_set="../x")
    with pytest.raises(ParameterError, match=r"^Parameter 'deployment\.model_name' is invalid"):
        section_parameters("deployment", root=REPO_ROOT, model_name="a/b")


def test_a_label_set_that_climbs_out_writes_no_export_and_tags_nothing(project):
    """The hostile week's reproduction: the export and the snapshot of label set ../../../evil."""
    commits = subprocess.run(["git", "rev-list", "--count", "HEAD"], cwd=project, capture_output=True, text=True)
    evil = "labeling.label_set=../../../evil,export.label_set=../../../evil"
    for pipeline in ("export", "snapshot"):
        result = kedro_cli(project, "run", "--pipelines", pipeline, "--params", evil)
        assert result.exit_code == 2, result.output
        assert isinstance(result.exception, SystemExit)  # one sentence, no traceback
        assert "Parameter 'labeling.label_set' is invalid: '../../../evil' cannot name a folder" in result.stderr
    assert not any(project.parent.parent.parent.glob("evil*"))
    after = subprocess.run(["git", "rev-list", "--count", "HEAD"], cwd=project, capture_output=True, text=True)
    assert after.stdout == commits.stdout
    assert subprocess.run(["git", "tag"], cwd=project, capture_output=True, text=True).stdout == ""


def test_the_writers_refuse_a_name_that_escapes_even_past_the_parameters(project, tmp_path):
    """Defence in depth: the export and snapshot writers check what they were handed, before writing."""
    from types import SimpleNamespace

    from cv_pipelines.config.loader import section_parameters
    from cv_pipelines.exports.errors import ExportSelectionError
    from cv_pipelines.exports.writing import write_export
    from cv_pipelines.images.ingestion import StoreLayout
    from cv_pipelines.pipelines.snapshot.nodes import take_snapshot

    exports = project / "data/exports"
    with pytest.raises(ExportSelectionError, match=r"label set '\.\./\.\./evil' would put its export outside"):
        write_export(SimpleNamespace(label_set="../../evil"), project_root=project, exports_dir=exports)  # type: ignore[arg-type]
    assert not exports.exists() and not (project / "evil_v1").exists()

    layout = StoreLayout(project, Path("data/store/images"), Path("data/registry"), Path("data/quarantine"))
    snapshot, ingestion = section_parameters("snapshot"), section_parameters("ingestion")
    refused = r"^label set '\.\./x' cannot name a folder or a git tag; .*set labeling\.label_set to such a name\.$"
    with pytest.raises(ConfigurationError, match=refused):
        take_snapshot(layout, snapshot, "../x", ingestion)
    outside = StoreLayout(project, tmp_path / "elsewhere", Path("data/registry"), Path("data/quarantine"))
    with pytest.raises(ConfigurationError, match=r"dataset version's data would be written to .*elsewhere, outside"):
        take_snapshot(outside, snapshot, "demo", ingestion)
    assert subprocess.run(["git", "tag"], cwd=project, capture_output=True, text=True).stdout == ""


def test_the_product_repository_holds_no_dataset_version_of_its_own():
    # `make demo` run in the checkout itself commits its snapshot's pointers into it; a fresh
    # clone would then start with pointers to objects that exist nowhere.
    tracked = subprocess.run(["git", "ls-files", "data"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    generated = [path for path in tracked.stdout.split() if not path.endswith((".gitkeep", "data/README.md"))]
    assert generated == [], generated[:5]
