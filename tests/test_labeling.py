"""The labeling loop against the stand-in CVAT, through the real cvat-sdk and Kedro."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import subprocess
from pathlib import Path

import pytest
import yaml

from cv_pipelines.errors import ConfigurationError, ExternalServiceError
from cv_pipelines.images.ingestion import ingest_images
from cv_pipelines.labeling.batches import read_manifest
from cv_pipelines.registries import parts as registry_parts
from tests.conftest import project_env, run_kedro, run_pipeline
from tests.cvat_server import CvatStandIn
from tests.support.images import image_bytes, write
from tests.test_ingestion import settings_for

FAST = {
    "batch_size": 3,
    "snapshot_after_pull": False,
    "cvat": {"segment_size": 2, "status_check_period_s": 0.02, "max_retries": 2, "retry_backoff_s": 0.01,
             "request_timeout_s": 5},
}


@pytest.fixture
def cvat(monkeypatch):
    with CvatStandIn() as server:
        monkeypatch.setenv("CVAT_HOST", server.url)
        monkeypatch.setenv("CVAT_ACCESS_TOKEN", "test-token")
        yield server


@pytest.fixture
def five_images(project) -> list[str]:
    datas = [image_bytes(200 + i, size=(80, 60)) for i in range(5)]
    for i, data in enumerate(datas):
        write(project / f"data/incoming/{i}.jpg", data)
    ingest_images(settings_for(project))
    return [hashlib.sha256(d).hexdigest() for d in datas]


def cycle(project: Path, **overrides) -> dict:
    labeling = {**FAST, **overrides, "cvat": {**FAST["cvat"], **overrides.get("cvat", {})}}
    run_pipeline(project, "labeling", params={"labeling": labeling})
    return yaml.safe_load((project / "data/reporting/labeling/last_cycle.yml").read_text())


def registry(project: Path, name: str):
    return registry_parts.read_registry(project / "data/registry" / name)


def test_a_full_loop_creates_pulls_and_opens_the_next_batch(project, cvat, five_images):
    first = cycle(project)
    batch_id = first["created"]["batch_id"]
    batch_dir = project / "data/batches" / batch_id
    info = yaml.safe_load((batch_dir / "info.yaml").read_text())
    assert info["status"] == "open" and info["num_images"] == 3 and info["label_set"] == "demo"
    task = cvat.tasks[info["cvat_task_id"]]
    assert task.name == batch_id and len(task.job_ids) == 2  # segment_size 2
    frames = task.frames
    manifest_ids = read_manifest(batch_dir)["image_id"].tolist()
    assert len(frames) == 3
    assert sorted(Path(f).stem for f in frames) == sorted(manifest_ids)
    assert set(manifest_ids) <= set(five_images)
    assert (batch_dir / "filelist.txt").read_text().count("\n") == 3
    assert registry(project, "batches").set_index("batch_id").loc[batch_id, "status"] == "open"

    # The annotator boxes one frame (one box crosses the border), leaves one empty, flags one.
    cvat.annotate(task.id, frames[0], [("circle", 5, 5, 30, 25), ("square", 60, 40, 120, 90)])
    cvat.tag(task.id, frames[2], "exclude")
    mid = cycle(project)
    assert mid["progress"] == {batch_id: "0/2 jobs done"} and mid["created"] is None
    cvat.complete_jobs(task.id)

    second = cycle(project)

    pulled = second["pulled"][batch_id]
    assert (pulled["labeled_images"], pulled["boxes"], pulled["excluded"]) == (2, 2, 1)
    boxes = registry(project, "annotations").set_index("label")
    assert boxes.loc["square", ["x_min", "y_min", "x_max", "y_max"]].tolist() == [60, 40, 80, 60]  # clipped
    assert set(boxes["image_id"]) == {Path(frames[0]).stem}
    labels = registry(project, "labels").set_index("image_id")
    assert labels.loc[Path(frames[1]).stem, "num_boxes"] == 0 and labels["annotator"].iloc[0] == "annotator"
    exclusions = registry(project, "exclusions")
    assert exclusions["image_id"].tolist() == [Path(frames[2]).stem]
    assert "flagged 'exclude'" in exclusions["reason"].iloc[0]
    assert yaml.safe_load((batch_dir / "info.yaml").read_text())["status"] == "pulled"

    # The next batch holds what is left: not labeled, not excluded.
    created = second["created"]
    next_task = cvat.tasks[created["cvat_task_id"]]
    assert created["num_images"] == 2
    chosen = {Path(f).stem for f in next_task.frames}
    assert chosen == set(five_images) - {Path(f).stem for f in frames}

    # Pulling the same batch again replaces its rows instead of adding to them.
    from cv_pipelines.labeling.batches import read_batch_info, update_batch_info

    info = read_batch_info(batch_dir)
    info.status = "open"
    update_batch_info(batch_dir, info)
    cvat.complete_jobs(next_task.id)
    cycle(project)
    assert len(registry(project, "annotations")) == 2
    assert len(registry(project, "labels")) == 2 + len(next_task.frames)


def annotate_finished_batches(server: CvatStandIn, done: set[int]) -> None:
    """The annotator: one circle on every frame of each task with frames, then its jobs completed."""
    for task in list(server.tasks.values()):
        if task.frames and task.id not in done:
            for frame in task.frames:
                server.annotate(task.id, frame, [("circle", 5, 5, 30, 25)])
            server.complete_jobs(task.id)
            done.add(task.id)


def test_a_cycle_reads_every_page_of_cvat_listings(project, five_images, monkeypatch):
    with CvatStandIn(page_size=1) as server:  # labels, jobs, tasks and projects: one per page
        monkeypatch.setenv("CVAT_HOST", server.url)
        monkeypatch.setenv("CVAT_ACCESS_TOKEN", "test-token")
        first = cycle(project)
        task = server.tasks[first["created"]["cvat_task_id"]]
        server.annotate(task.id, task.frames[0], [("circle", 5, 5, 30, 25)])
        server.tag(task.id, task.frames[1], "exclude")  # the last label of the project: the last page
        server.complete_jobs(task.id)
        pulled = cycle(project)["pulled"][task.name]
    assert (pulled["labeled_images"], pulled["boxes"], pulled["excluded"]) == (2, 1, 1)
    pages = [path for method, path in server.requests_log if method == "GET" and path.rstrip("/") == "/api/labels"]
    assert len(pages) >= len(server.labels)  # every label read, one page each


def test_cycles_under_random_faults_never_duplicate_or_lose_a_task_batch_or_row(project, five_images, monkeypatch):
    with CvatStandIn(page_size=2) as server:
        monkeypatch.setenv("CVAT_HOST", server.url)
        monkeypatch.setenv("CVAT_ACCESS_TOKEN", "test-token")
        # The first task's creation is done three times but never answered: the cycle gives up
        # with tasks made in CVAT; then random 502, 503, 504 and dropped connections, anywhere.
        server.inject("dropped_after", path_prefix="/api/tasks", method="POST", times=3)
        server.inject_randomly(0.25, seed=16)
        annotated: set[int] = set()
        failed = 0
        for _ in range(15):
            try:
                cycle(project)
            except ExternalServiceError:
                failed += 1  # "nothing was changed": the next cycle carries on
            annotate_finished_batches(server, annotated)
            labeled = registry(project, "labels")
            if len(labeled) == len(five_images):
                break
        server.inject_randomly(0)
        faults = len(server.injected)
        cycle(project)  # a calm cycle after the storm: it may only tidy up
        tasks = sorted(t.name for t in server.tasks.values())

    assert faults >= 10 and failed >= 1  # the storm was real: a cycle failed, and more faults were survived
    labels, annotations = registry(project, "labels"), registry(project, "annotations")
    assert sorted(labels["image_id"]) == sorted(five_images)  # every image labeled once: none lost, none twice
    assert sorted(annotations["image_id"]) == sorted(five_images)  # one box each, as drawn
    batches = registry(project, "batches")
    assert sorted(batches["batch_id"]) == tasks  # one CVAT task per batch, no orphan, no duplicate
    assert set(batches["status"]) == {"pulled"}
    folders = sorted(p.name for p in (project / "data/batches").iterdir())
    assert folders == tasks  # no batch folder left pending or twice


def snapshot_of_registries(project: Path) -> dict:
    files = {}
    for path in sorted((project / "data").rglob("*")):
        if path.is_file() and ("registry" in path.parts or "batches" in path.parts) and "_journal" not in path.parts:
            files[path.relative_to(project).as_posix()] = path.read_bytes()
    return files


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("server_error", r"failed with HTTP 500 during reading the jobs"),
        ("throttled", r"kept throttling requests \(429\)"),
        ("unauthorized", r"refused the credentials \(401\)"),
    ],
)
def test_cvat_faults_leave_registries_and_batches_as_they_were(project, cvat, five_images, fault, expected):
    cycle(project)
    task = next(iter(cvat.tasks.values()))
    cvat.annotate(task.id, task.frames[0], [("circle", 5, 5, 30, 25)])
    cvat.complete_jobs(task.id)
    before = snapshot_of_registries(project)
    cvat.inject(fault, path_prefix="/api/jobs", times=100)
    with pytest.raises(ExternalServiceError, match=expected):
        cycle(project)
    assert snapshot_of_registries(project) == before
    cvat.faults.clear()
    assert cycle(project)["pulled"]  # and the next run, once CVAT is well, moves on


def test_transient_throttling_is_retried(project, cvat, five_images):
    cycle(project)
    task = next(iter(cvat.tasks.values()))
    cvat.complete_jobs(task.id)
    cvat.inject("throttled", path_prefix="/api/tasks/", method="POST", times=2)  # the export request
    report = cycle(project)
    assert report["pulled"]
    posts = [p for m, p in cvat.requests_log if m == "POST" and p.endswith("/dataset/export")]
    assert len(posts) >= 3


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("fails", r"out of memory"), ("never_finishes", r"still 'started' after 1 s")],
)
def test_failed_or_endless_exports_stop_cleanly(project, cvat, five_images, mode, expected):
    cycle(project)
    task = next(iter(cvat.tasks.values()))
    cvat.complete_jobs(task.id)
    before = snapshot_of_registries(project)
    cvat.export_mode = mode
    with pytest.raises(ExternalServiceError, match=expected):
        cycle(project, cvat={"request_timeout_s": 1})
    assert snapshot_of_registries(project) == before


def test_unreachable_cvat_and_unsupported_versions_are_explained(project, five_images, monkeypatch):
    with CvatStandIn(version="2.70.0") as old:
        monkeypatch.setenv("CVAT_HOST", old.url)
        monkeypatch.setenv("CVAT_ACCESS_TOKEN", "test-token")
        with pytest.raises(ExternalServiceError, match=r"not usable with cvat-sdk 2\.80"):
            cycle(project)
    server = CvatStandIn().start()
    server.stop()
    monkeypatch.setenv("CVAT_HOST", server.url)
    with pytest.raises(ExternalServiceError, match=r"cannot be reached"):
        cycle(project, cvat={"max_retries": 0})
    assert not (project / "data/batches").exists() or not any((project / "data/batches").iterdir())


def test_a_service_failure_exits_with_3_and_one_sentence(project, five_images):
    """The real command's exit status and stderr for an ExternalServiceError: a CVAT nobody answers at."""
    import socket

    with socket.socket() as probe:  # a loopback port that was free a moment ago and has no server now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = project_env(project, CVAT_HOST=f"http://127.0.0.1:{port}", CVAT_ACCESS_TOKEN="test-token")
    completed = run_kedro(project, "run", "--pipelines", "labeling", "--env", "test",
                          "--params", "labeling.cvat.max_retries=0", env=env)
    assert completed.returncode == 3, completed.stderr
    assert "cannot be reached" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_password_login_and_a_wrong_password(project, five_images, monkeypatch, tmp_path):
    with CvatStandIn() as server:
        monkeypatch.delenv("CVAT_ACCESS_TOKEN", raising=False)
        local = project / "conf/test"  # the tests run the `test` environment
        local.mkdir(parents=True, exist_ok=True)
        (local / "credentials.yml").write_text(
            yaml.safe_dump({"cvat": {"host": server.url, "username": "annotator", "password": "secret"}})
        )
        assert cycle(project)["created"]["num_images"] == 3
        (local / "credentials.yml").write_text(
            yaml.safe_dump({"cvat": {"host": server.url, "username": "annotator", "password": "wrong"}})
        )
        with pytest.raises(ExternalServiceError, match="refused the credentials"):
            cycle(project)


def test_exclusions_from_a_csv_are_never_selected(project, cvat, five_images):
    csv = project / "exclude.csv"
    csv.write_text("image_id,reason\n" + f"{five_images[4]},blurry\n{five_images[3]},duplicate scene\nnot-an-id,typo\n")
    report = cycle(project, exclusions_csv=str(csv))
    exclusions = registry(project, "exclusions")
    assert sorted(exclusions["image_id"]) == sorted(five_images[3:5])
    task = cvat.tasks[report["created"]["cvat_task_id"]]
    assert not {Path(f).stem for f in task.frames} & set(five_images[3:5])


def test_blocking_mode_waits_for_the_annotators_then_pulls(project, cvat, five_images):
    import threading

    cycle(project)
    task = next(iter(cvat.tasks.values()))
    timer = threading.Timer(0.5, cvat.complete_jobs, args=(task.id,))
    timer.start()
    report = cycle(project, blocking=True, poll_interval_s=0.1, wait_timeout_s=30)
    timer.join()
    assert list(report["pulled"]) == [task.name]


def test_blocking_mode_gives_up_after_its_timeout(project, cvat, five_images):
    cycle(project)
    report = cycle(project, blocking=True, poll_interval_s=0.05, wait_timeout_s=0.3)
    assert report["pulled"] == {} and "stopped waiting after 0 s" in " ".join(report["messages"])


def test_share_mode_references_store_paths_instead_of_uploading(project, cvat, five_images):
    report = cycle(project, cvat={"upload": "share", "share_root": "cv_store"})
    task = cvat.tasks[report["created"]["cvat_task_id"]]
    for frame in task.frames:
        image_id = Path(frame).stem
        assert frame == f"cv_store/{image_id[:2]}/{image_id[2:4]}/{frame.rsplit('/', 1)[1]}"
    data_posts = [p for m, p in cvat.requests_log if m == "POST" and p.endswith("/data/")]
    assert len(data_posts) == 1  # one JSON request, no upload


#: Secrets no stand-in default shares with the project's files, so a hit is a leak, not a coincidence.
TOKEN = "tok-5f1c9e2a7b-stays-in-memory"
PASSWORD = "pw-9d3b6a1e4c-stays-in-memory"


@contextlib.contextmanager
def every_logger_at_debug(caplog):
    """caplog at DEBUG for every logger, also those that do not propagate (MLflow's)."""
    # Their loggers exist before the levels are set; and Kedro's import applies the
    # project's logging.yml (dictConfig), which would drop caplog's handler later.
    import cvat_sdk  # noqa: F401
    import kedro.framework.project  # noqa: F401
    import kedro_mlflow  # noqa: F401
    import mlflow  # noqa: F401
    import urllib3  # noqa: F401

    caplog.set_level(logging.DEBUG)
    caplog.handler.setLevel(logging.DEBUG)
    loggers = [lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    for lg in loggers:
        caplog.set_level(logging.DEBUG, logger=lg.name)
    isolated = [lg for lg in loggers if not lg.propagate]
    if caplog.handler not in logging.root.handlers:  # Kedro's first import, in this test, dropped it
        isolated.append(logging.root)
    for lg in isolated:
        lg.addHandler(caplog.handler)
    try:
        yield
    finally:
        for lg in isolated:
            lg.removeHandler(caplog.handler)


def git_objects(root: Path) -> bytes:
    """Every object of the copy's git repository, decompressed (loose and packed)."""
    return subprocess.run(
        ["git", "cat-file", "--batch-all-objects", "--batch"], cwd=root, capture_output=True, check=True
    ).stdout


def test_secrets_never_reach_logs_reports_or_mlflow(project, five_images, monkeypatch, caplog, capfd):
    import sqlite3

    from mlflow import MlflowClient

    # Labeling is untracked by default; track it here so MLflow has a run to leak into.
    mlflow_yml = project / "conf/base/mlflow.yml"
    untracked = mlflow_yml.read_text()
    mlflow_yml.write_text(untracked.replace("[ingestion, demo_data, labeling, snapshot, labeling_flow]", "[ingestion, demo_data, snapshot]"))
    assert mlflow_yml.read_text() != untracked
    credentials = project / "conf/test/credentials.yml"
    with CvatStandIn(tokens={TOKEN}, users={"annotator": PASSWORD}) as server, every_logger_at_debug(caplog):
        monkeypatch.setenv("CVAT_HOST", server.url)
        monkeypatch.setenv("CVAT_ACCESS_TOKEN", TOKEN)
        cycle(project)  # a token: creates the first batch
        task = next(iter(server.tasks.values()))
        server.annotate(task.id, task.frames[0], [("circle", 5, 5, 30, 25)])
        server.complete_jobs(task.id)
        monkeypatch.delenv("CVAT_ACCESS_TOKEN")
        credentials.write_text(
            yaml.safe_dump({"cvat": {"host": server.url, "username": "annotator", "password": PASSWORD}})
        )
        assert cycle(project)["pulled"]  # a password login: pulls, and opens the next batch
    secrets = {TOKEN, PASSWORD, *server.issued_secrets}
    assert len(secrets) == 5  # one login: session id, CSRF token and key

    db = project / "data/mlflow/mlflow.db"
    client = MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("cv_pipelines").experiment_id])
    assert len(runs) == 2 and {run.info.status for run in runs} == {"FINISHED"}
    assert all(run.data.params["labeling.batch_size"] == "3" for run in runs)  # the labeling runs, with params
    connection = sqlite3.connect(db)
    try:
        dump = "\n".join(connection.iterdump()).encode()
    finally:
        connection.close()
    files = {
        path.relative_to(project).as_posix(): path.read_bytes()
        for path in project.rglob("*")
        if path.is_file() and path != credentials  # where the password belongs
    }
    assert "data/mlflow/mlflow.db" in files and any(name.endswith(".parquet") for name in files)
    captured = capfd.readouterr()
    assert "Labeling cycle:" in caplog.text
    assert any(record.levelno == logging.DEBUG for record in caplog.records)
    assert "conf_creds: <redacted>" in caplog.text  # Kedro's hook traces were on, and hid the credentials
    places = {
        "the MLflow database dump": dump,
        "git's objects": git_objects(project),
        "the logs": caplog.text.encode(),
        "stdout and stderr": (captured.out + captured.err).encode(),
        **{f"file {name}": data for name, data in files.items()},
    }
    leaks = [f"{secret} in {place}" for secret in sorted(secrets) for place, data in places.items()
             if secret.encode() in data]
    assert leaks == []


def test_hook_traces_redact_credentials_inline_and_as_a_block():
    from cv_pipelines.config.log_redaction import redact_trace

    inline = "  after_catalog_created [hook]\n      catalog: <catalog>\n      conf_creds: {'cvat': {'password': 'pw'}}\n"
    block = "  after_catalog_created [hook]\n      conf_creds:\n        {'cvat':\n        'pw'}\n      save_version: v1\n"
    assert redact_trace(inline) == "  after_catalog_created [hook]\n      catalog: <catalog>\n      conf_creds: <redacted>\n"
    assert redact_trace(block) == "  after_catalog_created [hook]\n      conf_creds: <redacted>\n      save_version: v1\n"


def test_a_pull_ends_with_a_dataset_snapshot(project, cvat, five_images):
    import subprocess

    cycle(project)
    task = next(iter(cvat.tasks.values()))
    cvat.complete_jobs(task.id)
    report = cycle(project, snapshot_after_pull=True)
    assert report["snapshot"]["tag"] == "data/demo/v1"
    message = subprocess.run(["git", "log", "-1", "--format=%s"], cwd=project, capture_output=True, text=True).stdout
    assert task.name in message


def test_a_crash_between_task_creation_and_batch_folder_is_recovered(project, cvat, five_images):
    from cv_pipelines.images.ingestion import read_images_registry
    from cv_pipelines.labeling.batches import stage_batch_folder

    images = read_images_registry(project / "data/registry")
    # A run created task "batch_crashed" in CVAT, then died before naming its folder.
    cycle(project)  # creates the CVAT project and a first, normal batch
    project_id = next(iter(cvat.projects))
    stage_batch_folder(project / "data/batches", "batch_crashed", "demo", images.head(2))
    from cvat_sdk import make_client
    from cvat_sdk.api_client import models

    client = make_client(cvat.url, access_token="test-token")
    client.config.status_check_period = 0.02
    files = [project / p for p in images.head(2)["path"]]
    client.tasks.create_from_data(models.TaskWriteRequest(name="batch_crashed", project_id=project_id), files)
    # A second crash left a folder whose task never got created.
    stage_batch_folder(project / "data/batches", "batch_orphan", "demo", images.tail(1))

    report = cycle(project, max_open_batches=3)

    assert report["adopted"] == ["batch_crashed"]
    assert any("batch_orphan" in m for m in report["messages"])
    assert yaml.safe_load((project / "data/batches/batch_crashed/info.yaml").read_text())["status"] == "open"
    assert not list((project / "data/batches").glob(".pending_*"))


def test_a_pull_with_many_bad_boxes_counts_them_all_and_logs_without_a_flood(project, cvat, five_images, caplog):
    cycle(project)
    task = next(iter(cvat.tasks.values()))
    cvat.annotate(task.id, task.frames[0], [("circle", 5, 5, 30, 25)] * 41)  # one box and 40 repeats of it
    cvat.complete_jobs(task.id)
    with caplog.at_level(logging.WARNING, logger="cv_pipelines"):
        assert cycle(project)["pulled"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and r.name.startswith("cv_pipelines")]
    assert len([w for w in warnings if "box [5, 5, 30, 25] twice" in w]) == 20  # the first 20, one by one
    assert "20 more record(s) left out (20 duplicate box)" in warnings[-1]
    assert len(registry(project, "annotations")) == 1


LABELS = ["circle", "square", "triangle", "star", "ring"]


def add_label(server: CvatStandIn, project_id: int, name: str) -> None:
    """A label someone added to the CVAT project by hand, outside the label set."""
    label_id = next(server._ids)
    server.labels[label_id] = {"id": label_id, "name": name, "type": "rectangle", "project_id": project_id}


def test_boxes_labeled_outside_the_label_set_stop_the_pull_before_anything_is_written(project, cvat, five_images):
    cycle(project)
    task = next(iter(cvat.tasks.values()))
    for name in ("box", "disc"):
        add_label(cvat, task.project_id, name)
    cvat.annotate(task.id, task.frames[0], [("circle", 5, 5, 30, 25), ("box", 10, 10, 40, 40), ("box", 1, 1, 9, 9)])
    cvat.annotate(task.id, task.frames[1], [("disc", 5, 5, 30, 25)])
    cvat.complete_jobs(task.id)
    before = snapshot_of_registries(project)

    with pytest.raises(ConfigurationError) as refused:
        cycle(project)

    assert refused.value.message == (
        f"CVAT task {task.id} ({task.name}) has 3 box(es) labeled outside label set 'demo' (circle, square, "
        "triangle, star, ring): 'box' (2 boxes), 'disc' (1 box); nothing was pulled: add those labels at the end of "
        "labeling.labels (the other class ids stay), or relabel those boxes in CVAT, then run again."
    )
    assert snapshot_of_registries(project) == before  # registries and batch folders, byte for byte
    # The fix it names: the labels at the end of labeling.labels.
    pulled = cycle(project, labels=[*LABELS, "box", "disc"])["pulled"][task.name]
    assert (pulled["labeled_images"], pulled["boxes"]) == (3, 4)
    assert sorted(registry(project, "annotations")["label"]) == ["box", "box", "circle", "disc"]


def test_a_frame_whose_boxes_were_all_left_out_is_not_recorded_as_background(project, cvat, five_images):
    first = cycle(project)
    task = cvat.tasks[first["created"]["cvat_task_id"]]
    bad, empty, good = (Path(frame).stem for frame in task.frames)
    cvat.annotate(task.id, task.frames[0], [("circle", 100, 10, 120, 30)])  # wholly right of the 80x60 image
    cvat.annotate(task.id, task.frames[2], [("square", 5, 5, 30, 25)])
    cvat.complete_jobs(task.id)

    report = cycle(project)

    pulled = report["pulled"][task.name]
    assert (pulled["labeled_images"], pulled["boxes"]) == (2, 1)
    labels = registry(project, "labels").set_index("image_id")
    assert bad not in labels.index  # not an image with no objects
    assert labels.loc[empty, "num_boxes"] == 0 and labels.loc[good, "num_boxes"] == 1  # a frame left empty is
    assert any("had 1 box(es), all left out" in s and bad in s for s in pulled["left_out"])  # set aside, saying why
    # Unlabeled again, so the next batch takes it back to the annotators.
    assert bad in {Path(frame).stem for frame in cvat.tasks[report["created"]["cvat_task_id"]].frames}
