"""The team set-up (README: "The team set-up"): the whole loop on real servers on loopback.

One stack for the module, started and stopped by the product's own command
(``python -m cv_pipelines.commands.stack``, what ``make stack-up`` runs): PostgreSQL
(Debian's server), SeaweedFS's S3 gateway and ``mlflow server`` on them. A project copy
whose ``conf/stack`` names the stack's port runs the main job with ``--env stack``; a
fresh clone of it, with nothing but git and the stack, rebuilds the export. A service
that cannot start fails the module with its sentence (no skip).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import make_project_copy, project_env, run_kedro
from tests.support.stack import (  # noqa: F401  (running_stack: the module's `stack` fixture)
    MODEL,
    STACK_COMMAND,
    RunningStack,
    free_port_block,
    running_stack,
    stack_home_parent,
)


@pytest.fixture(scope="module")
def demo_on_stack(stack):
    """The main job (`make demo ENV=stack`) on the stack, once for the module."""
    result = subprocess.run(
        [sys.executable, "-m", "cv_pipelines.commands.main_job", "--env", "stack", "--project-path", str(stack.project)],
        cwd=stack.project, env=project_env(stack.project), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result


def processes_of(stack: RunningStack) -> list[str]:
    """Running processes of the stack: named by its home (PostgreSQL, SeaweedFS) or its database (MLflow)."""
    marks = (str(stack.home), f"127.0.0.1:{stack.port_base}/mlflow")
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(mark in text for mark in marks):
            found.append(text)
    return found


def listening(port_base: int) -> list[int]:
    """The ports of the stack's block that accept a connection."""
    open_ports = []
    for port in range(port_base, port_base + 10):
        with socket.socket() as sock:
            sock.settimeout(1)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                open_ports.append(port)
    return open_ports


def test_the_main_job_on_the_stack_keeps_runs_in_postgresql_and_artifacts_in_the_buckets(stack, demo_on_stack):
    out = demo_on_stack.stdout
    assert "cv_pipelines_detector version 1 is @champion" in out and "from version 1" in out
    assert stack.mlflow_uri in out  # the summary points at the server, not a SQLite file
    assert not (stack.project / "data/mlflow/mlflow.db").exists()  # nothing tracked on the laptop

    runs = dict(stack.sql("SELECT name, count(*) FROM runs WHERE status = 'FINISHED' GROUP BY name"))
    assert {"training", "evaluation", "deployment"} <= set(runs), runs
    metrics = {key for (key,) in stack.sql("SELECT DISTINCT key FROM metrics")}
    assert {"test/mAP50", "test/mAP50-95"} <= metrics, sorted(metrics)[:20]
    assert stack.sql("SELECT name, version, status FROM model_versions") == [(MODEL, 1, "READY")]
    assert stack.sql("SELECT alias, version FROM registered_model_aliases") == [("champion", 1)]
    artifact_uris = {uri for (uri,) in stack.sql("SELECT artifact_uri FROM runs")}
    assert all(uri.startswith("mlflow-artifacts:/") for uri in artifact_uris), artifact_uris  # proxied by the server

    artifacts = stack.keys("mlflow")
    assert any(key.endswith("/weights/best.pt") for key in artifacts), artifacts
    assert any(key.endswith("confusion_matrix.png") for key in artifacts)
    assert any(key.endswith("/MLmodel") for key in artifacts) and any(key.endswith(".onnx") for key in artifacts)
    # Every object of the snapshot is in the DVC bucket, by content.
    cache = stack.project / ".dvc/cache/files/md5"
    cached = {p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.is_file()}
    pushed = {key.removeprefix("cv_pipelines/files/md5/") for key in stack.keys("dvc")}
    assert cached and cached <= pushed, sorted(cached - pushed)[:5]
    # The champion was served from the server: its artifacts were fetched through it.
    served = (stack.home / "logs/mlflow.log").read_text()
    assert "GET /api/2.0/mlflow/registered-models/alias?" in served
    assert re.search(r"GET /api/2\.0/mlflow-artifacts/(artifacts|presigned)/\S+/MLmodel", served)


def test_no_secret_of_the_stack_reaches_logs_params_data_or_git(stack, demo_on_stack):
    values = [value.encode() for value in stack.secrets.values()]
    places = [p for p in (stack.project / "data").rglob("*") if p.is_file()] + list((stack.home / "logs").iterdir())
    leaked = [str(p) for p in places if any(value in p.read_bytes() for value in values)]
    assert leaked == []
    printed = (demo_on_stack.stdout + demo_on_stack.stderr).encode()
    assert not any(value in printed for value in values)
    tracked = stack.sql("SELECT value FROM params UNION ALL SELECT value FROM tags UNION ALL SELECT value FROM model_version_tags")
    assert not [v for (v,) in tracked if v and any(value.decode() in v for value in values)]
    history = subprocess.run(["git", "log", "-p", "--all"], cwd=stack.project, capture_output=True, check=True).stdout
    assert not any(value in history for value in values)
    assert (stack.home / "secrets.json").stat().st_mode & 0o077 == 0


def test_a_fresh_clone_rebuilds_the_export_from_the_s3_remote_alone_and_evaluates_alike(stack, demo_on_stack, tmp_path):
    clone = tmp_path / "second_clone"
    subprocess.run(["git", "clone", "-q", str(stack.project), str(clone)], check=True)
    assert not (clone / ".dvc/cache").exists() and not list((clone / "data").rglob("*.jpg"))  # git holds pointers only
    connected = stack.command("connect", project=clone)
    assert connected.returncode == 0, connected.stderr
    env = project_env(clone, MLFLOW_TRACKING_URI=stack.mlflow_uri)  # the other way to name the server
    export = run_kedro(clone, "run", "--pipelines", "export", "--env", "stack", "--params",
                       "dataset_version=data/demo/v1", env=env)
    assert export.returncode == 0, export.stderr[-3000:]
    first = yaml.safe_load((stack.project / "data/exports/demo_v1/export_info.yaml").read_text())
    second = yaml.safe_load((clone / "data/exports/demo_v1/export_info.yaml").read_text())
    assert second["content_hash"] == first["content_hash"] and second["dataset_version"] == "data/demo/v1"
    compared = 0
    for path in sorted((stack.project / "data/exports/demo_v1").rglob("*")):
        relative = path.relative_to(stack.project)
        if path.name == "dataset.yaml":  # Ultralytics reads the export's absolute path from it: the clone's own
            ours, theirs = (yaml.safe_load(p.read_text()) for p in (path, clone / relative))
            assert {**theirs, "path": None} == {**ours, "path": None}
        elif path.is_file() and path.name != "export_info.yaml" and path.suffix != ".cache":  # Ultralytics' own
            assert (clone / relative).read_bytes() == path.read_bytes(), relative
            compared += 1
    assert compared > 24  # the images and their label files

    from mlflow import MlflowClient

    from cv_pipelines.models.registry import TRAINING_RUN_TAG

    registered = MlflowClient(stack.mlflow_uri).get_model_version_by_alias(MODEL, "champion")
    evaluation = run_kedro(clone, "run", "--pipelines", "evaluation", "--env", "stack", "--params",
                           f"evaluation.run_id={registered.tags[TRAINING_RUN_TAG]}", env=env)
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    metrics = [yaml.safe_load((root / "data/reporting/evaluation/last_evaluation.yml").read_text())["metrics"]
               for root in (stack.project, clone)]
    assert metrics[1] == pytest.approx(metrics[0], abs=1e-9) and metrics[0]


def test_the_jobs_container_command_trains_a_dataset_version_from_git_and_s3_into_the_servers_mlflow(
    stack, demo_on_stack, tmp_path, monkeypatch
):
    """The rendered Job's own container command, run by the local provider: clone, dvc pull, kedro run."""
    from mlflow import MlflowClient

    from cv_pipelines.commands.stack import DVC_BUCKET, open_stack
    from cv_pipelines.engines.compute_settings import compute_settings
    from cv_pipelines.engines.kubernetes_job import render_job, validate_manifest
    from cv_pipelines.engines.providers import LocalProvider
    from cv_pipelines.engines.requests import TrainingRequest
    from cv_pipelines.models.registry import TRAINING_RUN_TAG

    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=stack.project, capture_output=True, text=True,
                            check=True).stdout.strip()
    settings = compute_settings("stack", stack.project)
    remote = settings.dvc_remote.model_copy(update={"url": f"s3://{DVC_BUCKET}/cv_pipelines",
                                                    "endpoint_url": open_stack(stack.home).s3_endpoint})
    settings = settings.model_copy(update={"dvc_remote": remote})
    request = TrainingRequest(dataset_version="data/demo/v1", candidate="default", env="stack", provider="local")
    manifest = render_job(request, commit=commit, repository=str(stack.project), settings=settings, candidate_items=[])
    validate_manifest(manifest)
    # The Secret's values, as the local provider reads them: from its environment.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.mlflow_uri)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", stack.secrets["s3_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", stack.secrets["s3_secret_access_key"])
    provider = LocalProvider(settings, tmp_path / "jobs")
    job_id = provider.submit(manifest)
    folder = tmp_path / "jobs" / job_id
    deadline = time.monotonic() + 400
    while provider.status(job_id) == "running" and time.monotonic() < deadline:
        time.sleep(1)
    log = (folder / "job.log").read_text(errors="replace")
    assert provider.status(job_id) == "succeeded", log[-4000:]

    clone = folder / "workspace/project"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True).stdout.strip()
    assert head == commit
    pulled = [p for p in (clone / ".dvc/cache").rglob("*") if p.is_file()]
    assert pulled and list((clone / "data/store/images").rglob("*.jpg"))  # dvc pull brought the version's data

    client = MlflowClient(stack.mlflow_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, f"tags.`cv_pipelines.compute.job_id` = '{job_id}'")
    training = [r for r in runs if r.data.tags.get("cv_pipelines.training") == "true"]
    assert len(training) == 1, [r.data.tags for r in runs]
    tags = training[0].data.tags
    assert tags["cv_pipelines.compute.provider"] == "local" and tags["cv_pipelines.compute.candidate"] == "default"
    assert tags["data.dataset_version"] == "data/demo/v1" and tags["code_commit"] == commit
    versions = client.search_model_versions(f"name = '{MODEL}'")
    assert [v.version for v in versions if v.tags.get(TRAINING_RUN_TAG) == training[0].info.run_id]
    assert not any(value in log for value in stack.secrets.values())


def test_the_object_store_down_or_refusing_the_keys_makes_no_tag_and_the_next_snapshot_pushes_the_rest(stack, demo_on_stack):
    from dvc.config import Config

    from cv_pipelines.errors import ExternalServiceError
    from tests.test_dataset_versions import add_images, git, snapshot

    project = stack.project
    config = Config(dvc_dir=str(project / ".dvc"), validate=False)
    remote = dict(config.load_one("local")["remote"]["stack"])
    tags_before = git(project, "tag", "--list", "data/*").splitlines()
    add_images(project, range(5000, 5004))

    def with_remote(**changes):
        with config.edit("local") as local:
            local["remote"]["stack"] = {**remote, **changes}

    try:
        with_remote(secret_access_key="not-the-secret")
        with pytest.raises(ExternalServiceError) as refused:
            snapshot(project)
        assert "dvc remote modify --local stack" in str(refused.value) and "secret_access_key" in str(refused.value)
        with_remote(endpointurl=f"http://127.0.0.1:{free_port_block()}")  # nothing listens there
        with pytest.raises(ExternalServiceError) as down:
            snapshot(project)
        assert "could not be written" in str(down.value) and "no dataset version was committed" in str(down.value)
        assert git(project, "tag", "--list", "data/*").splitlines() == tags_before
    finally:
        with_remote()
    again = snapshot(project)
    assert again.committed and again.tag not in tags_before
    cache = project / ".dvc/cache/files/md5"
    cached = {p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.is_file()}
    pushed = {key.removeprefix("cv_pipelines/files/md5/") for key in stack.keys("dvc")}
    assert cached <= pushed, sorted(cached - pushed)[:5]


def test_a_tracking_server_that_does_not_answer_stops_the_run_with_one_sentence(stack, demo_on_stack):
    dead = f"http://127.0.0.1:{free_port_block()}"
    result = run_kedro(stack.project, "run", "--pipelines", "evaluation", "--env", "stack",
                       env=project_env(stack.project, MLFLOW_TRACKING_URI=dead), timeout=120)
    assert result.returncode == 3, result.stderr[-2000:]
    assert f"The MLflow tracking server {dead} does not answer" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_registration_cut_short_is_finished_by_the_next_deployment(stack, demo_on_stack):
    from mlflow import MlflowClient

    client = MlflowClient(stack.mlflow_uri)
    # Other tests of the module register versions on the same server (the Job's container command).
    versions = sorted(v.version for v in client.search_model_versions(f"name = '{MODEL}'"))
    assert "1" in versions
    # What a server lost between register_model and the gate leaves: the version, no aliases, no verdict.
    client.delete_registered_model_alias(MODEL, "champion")
    for tag in ("gate", "gate_reason", "champion_since", "promotion_reason", "challenger_since"):
        client.delete_model_version_tag(MODEL, "1", tag)
    result = run_kedro(stack.project, "run", "--pipelines", "deployment", "--env", "stack")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "was registered without its gate verdict; finishing its registration" in result.stderr
    version = client.get_model_version_by_alias(MODEL, "champion")
    assert version.version == "1" and version.tags["gate"] == "promoted" and "champion_since" in version.tags
    assert sorted(v.version for v in client.search_model_versions(f"name = '{MODEL}'")) == versions  # none new


def test_wrong_database_credentials_name_the_key_and_down_leaves_no_process(stack, demo_on_stack):
    secrets_file = stack.home / "secrets.json"
    original = secrets_file.read_text()
    secrets_file.write_text(json.dumps({**stack.secrets, "postgres_password": "not-the-password"}))
    try:
        refused = stack.command("up")
    finally:
        secrets_file.write_text(original)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "refused the password" in refused.stderr and "postgres_password" in refused.stderr
    assert "not-the-password" not in refused.stderr

    down = stack.command("down")
    assert down.returncode == 0 and "stopped" in down.stdout, down.stderr
    assert processes_of(stack) == [] and listening(stack.port_base) == []
    status = stack.command("status")
    assert status.stdout.count("stopped") == 3, status.stdout


# -- the command's own refusals, without a running stack ------------------------------------


def stack_main(*args: str) -> tuple[int, str]:
    """``python -m cv_pipelines.commands.stack ...`` in this process: its status and its stderr."""
    import contextlib
    import io

    from cv_pipelines.commands import stack as stack_command

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = stack_command.main(list(args))
    return status, err.getvalue()


def test_connecting_to_a_stack_that_is_not_running_says_where_to_start_it(tmp_path):
    project = make_project_copy(tmp_path / "project")
    status, err = stack_main("connect", "--home", str(tmp_path / ".stack"), "--project", str(project))
    assert status == 3 and "is not running (postgres, s3, mlflow stopped)" in err and "make stack-up" in err
    assert not (project / ".dvc/config.local").exists()


def test_a_missing_server_program_and_a_service_that_never_answers_are_one_sentence(tmp_path, monkeypatch):
    from cv_pipelines.commands import stack as stack_command
    from cv_pipelines.errors import ExternalServiceError

    with pytest.raises(ExternalServiceError, match=r"PostgreSQL's no-such-initdb is not installed.*postgresql"):
        stack_command._postgres_bin("no-such-initdb")
    stack = stack_command.open_stack(tmp_path / ".stack", free_port_block())
    monkeypatch.setattr(stack_command, "_READY_TIMEOUT_S", 0.5)
    with pytest.raises(ExternalServiceError, match=r"The thing did not become ready within 0 s; see its log"):
        stack_command._wait_until(lambda: False, "The thing", stack, "s3")
    exits = stack_command._spawn(stack, "s3", [sys.executable, "-c", "print('bad flag -x'); raise SystemExit(4)"], {})
    with pytest.raises(ExternalServiceError, match=r"exited with status 4 while starting; its log is .*: bad flag -x"):
        stack_command._wait_until(lambda: False, "The gateway", stack, "s3", exits)


def test_postgresql_that_cannot_initialise_or_bind_says_so_and_keeps_the_users_files(tmp_path_factory):
    parent = stack_home_parent(tmp_path_factory)
    try:
        occupied = parent / "occupied" / ".stack"
        (occupied / "postgres").mkdir(parents=True)
        (occupied / "postgres/notes.txt").write_text("the user's")
        status, err = stack_main("up", "--home", str(occupied), "--port-base", str(free_port_block()))
        assert status == 3 and "initdb could not make the stack's database in" in err, err
        assert (occupied / "postgres/notes.txt").read_text() == "the user's"

        base = free_port_block()
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", base))  # PostgreSQL's port, held by someone else
            taken.listen()
            status, err = stack_main("up", "--home", str(parent / "busy" / ".stack"), "--port-base", str(base))
        assert status == 3 and f"PostgreSQL did not start on 127.0.0.1:{base}; its log is" in err, err
    finally:
        for home in parent.glob("*/.stack"):
            stack_main("down", "--home", str(home))
        shutil.rmtree(parent, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands PostgreSQL to the postgres user")
def test_as_root_a_home_the_postgres_user_cannot_reach_is_refused_with_the_fix(tmp_path):
    tmp_path.chmod(0o700)
    status, err = stack_main("up", "--home", str(tmp_path / ".stack"), "--port-base", str(free_port_block()))
    assert status == 2 and "who cannot reach" in err and "CV_STACK_HOME" in err, err
    assert not (tmp_path / ".stack/postgres").exists()


def test_the_stack_commands_refuse_bad_homes_ports_and_projects_with_one_sentence(tmp_path, monkeypatch):
    from cv_pipelines.commands import stack as stack_command
    from cv_pipelines.errors import ConfigurationError, ExternalServiceError

    status, err = stack_main("up", "--home", str(tmp_path / "low"), "--port-base", "80")
    assert status == 2 and "port base 80 must be between 1024 and 65525" in err
    home = tmp_path / ".stack"
    stack = stack_command.open_stack(home, 30000)
    with pytest.raises(ConfigurationError, match=r"listens on ports 30000-30009 \(recorded in .*stack.json\)"):
        stack_command.open_stack(home, 30010)
    status, err = stack_main("up", "--home", str(home), "--project", str(tmp_path))
    assert status == 2 and "is not a DVC project (no .dvc folder)" in err
    assert not (home / "postgres").exists()  # refused before anything started
    with pytest.raises(ExternalServiceError, match=r"PostgreSQL on 127.0.0.1:\d+ cannot be reached"):
        stack_command.postgres_connection(stack_command.open_stack(tmp_path / "b", free_port_block()), "x")
    monkeypatch.setattr(stack_command.sys, "executable", str(tmp_path / "bin/python"))
    monkeypatch.setattr(stack_command.shutil, "which", lambda name: None)
    with pytest.raises(ExternalServiceError, match=r"weed binary is not installed.*\.\[stack\]"):
        stack_command._weed_argv(stack)
