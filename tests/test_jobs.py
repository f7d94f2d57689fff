"""Training Jobs (``python -m cv_pipelines.commands.jobs``): rendered Kubernetes Jobs and the compute providers.

The manifests are checked against the Kubernetes schema offline (kubernetes-validate's
bundled 1.37 schema). The ``kubernetes`` provider talks to the stand-in API server
(tests/k8s_server) through the real client; the strategy's fallbacks run a cheap job
(the rendered Job with a one-line command) on the ``local`` and ``dask`` providers. The
real container command, training included, runs against the team set-up in tests/test_stack.py.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import project_env
from tests.k8s_server import KubernetesStandIn, check_model
from tests.test_dataset_versions import git

TAG = "data/demo/v1"
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
#: The Job's command replaced by one line: what the strategy tests run (no training).
CHEAP = 'echo "$CV_COMPUTE_PROVIDER $CV_COMPUTE_JOB_ID $CV_DATASET_VERSION" > "$CV_WORKSPACE/ran"'


def jobs(root: Path, *args: str) -> tuple[int, str, str]:
    from cv_pipelines.commands import jobs as command

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = command.main(["--project-path", str(root), *args])
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def tagged(bare_project: Path) -> Path:
    """A project copy with a dataset version tag (the render checks it exists, reads nothing of it)."""
    subprocess.run(["git", "tag", TAG], cwd=bare_project, check=True)
    subprocess.run(["git", "remote", "add", "origin", "https://git.example/cv_pipelines.git"], cwd=bare_project,
                   check=True)
    return bare_project


def container_env(manifest: dict) -> list[dict]:
    return manifest["spec"]["template"]["spec"]["containers"][0]["env"]


def test_rendered_cpu_and_gpu_jobs_pass_the_kubernetes_schema_and_carry_the_lineage(tagged):
    from cv_pipelines.engines.kubernetes_job import validate_manifest

    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tagged, capture_output=True, text=True).stdout.strip()
    status, out, err = jobs(tagged, "render", "--dataset-version", TAG, "--candidate", "default")
    assert status == 0, err
    cpu = yaml.safe_load(out)
    status, out, err = jobs(tagged, "--env", "test", "render", "--dataset-version", TAG, "--candidate", "default",
                            "--gpus", "1", "--image", "registry.example/train:1", "--params", "training.epochs=3")
    assert status == 0, err
    gpu = yaml.safe_load(out)
    for manifest in (cpu, gpu):
        validate_manifest(manifest)
        meta = manifest["metadata"]
        assert meta["annotations"]["cv-pipelines.io/dataset-version"] == TAG
        assert meta["annotations"]["cv-pipelines.io/code-commit"] == commit
        assert meta["labels"]["cv-pipelines.io/dataset-version"] == "data-demo-v1"
        assert meta["labels"]["cv-pipelines.io/code-commit"] == commit
        assert all(LABEL_VALUE.match(v) and len(v) <= 63 for v in meta["labels"].values())
        spec = manifest["spec"]
        assert (spec["backoffLimit"], spec["activeDeadlineSeconds"], spec["ttlSecondsAfterFinished"]) == (1, 21600, 86400)
        env = {v["name"]: v for v in container_env(manifest)}
        # The tracking URI and the keys only as references to the Secret.
        for name in ("MLFLOW_TRACKING_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert set(env[name]) == {"name", "valueFrom"}
            assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "cv-pipelines-training"
        assert env["CV_CODE_COMMIT"]["value"] == commit
        assert env["CV_CODE_REPOSITORY"]["value"] == "https://git.example/cv_pipelines.git"
        assert env["CV_KEDRO_PIPELINES"]["value"] == "export,training,evaluation,deployment"
        script = spec["template"]["spec"]["containers"][0]["command"][2]
        assert "dvc pull" in script and "kedro run --pipelines" in script
    cpu_container, gpu_container = (m["spec"]["template"]["spec"]["containers"][0] for m in (cpu, gpu))
    assert "nvidia.com/gpu" not in cpu_container["resources"]["limits"]
    assert gpu_container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu_container["image"] == "registry.example/train:1"
    gpu_env = {v["name"]: v.get("value") for v in gpu_container["env"]}
    assert gpu_env["CV_KEDRO_ENV"] == "test"
    assert gpu_env["CV_KEDRO_PARAMS"] == f"dataset_version={TAG},training.epochs=3,training.device=0"


def test_a_long_odd_dataset_version_is_trimmed_in_labels_and_exact_in_annotations(tagged):
    from cv_pipelines.engines.kubernetes_job import validate_manifest

    long_tag = "data/" + "very_long+odd name".replace(" ", "_") * 5 + "/v12"
    subprocess.run(["git", "tag", long_tag], cwd=tagged, check=True)
    status, out, err = jobs(tagged, "render", "--dataset-version", long_tag, "--candidate", "default")
    assert status == 0, err
    manifest = yaml.safe_load(out)
    validate_manifest(manifest)
    label = manifest["metadata"]["labels"]["cv-pipelines.io/dataset-version"]
    assert len(label) <= 63 and LABEL_VALUE.match(label) and label.startswith("data-very_long-odd")
    assert manifest["metadata"]["annotations"]["cv-pipelines.io/dataset-version"] == long_tag


def test_a_broken_manifest_is_refused_by_the_schema_check(tagged):
    import kubernetes_validate

    from cv_pipelines.engines.kubernetes_job import validate_manifest

    manifest = yaml.safe_load(jobs(tagged, "render", "--dataset-version", TAG, "--candidate", "default")[1])
    container = lambda m: m["spec"]["template"]["spec"]["containers"][0]  # noqa: E731
    breakages = [
        lambda m: m["spec"].update(backoffLimit="once"),
        lambda m: container(m).update(gpus=1),  # not a field of a Container
        lambda m: m["spec"]["template"]["spec"].pop("containers"),
        lambda m: container(m)["env"].append({"name": "X", "valueFrom": {"secretKeyRef": {"key": 1}}}),
    ]
    for broken in breakages:
        changed = copy.deepcopy(manifest)
        broken(changed)
        with pytest.raises(kubernetes_validate.ValidationError):
            validate_manifest(changed)


def test_the_jobs_command_refuses_bad_input_with_one_sentence(tagged, bare_project):
    cases = [
        (("render", "--dataset-version", "data/demo/v9", "--candidate", "default"), "is not a tag or revision"),
        (("render", "--dataset-version", TAG, "--candidate", "nope"), "unknown matrix candidate(s) nope"),
        (("render", "--dataset-version", TAG, "--candidate", "default", "--commit", "f00"), "--commit f00 is not a commit"),
        (("render", "--dataset-version", TAG, "--candidate", "default", "--gpus", "-1"), "--gpus -1 is negative"),
        (("--env", "a b", "render", "--dataset-version", TAG, "--candidate", "default"), "env 'a b' is not a conf/"),
        (("render", "--dataset-version", TAG, "--candidate", "default", "--params", "x"), "param 'x' is not one"),
    ]
    for args, sentence in cases:
        status, out, err = jobs(tagged, *args)
        assert status == 2 and err.startswith("Error: ") and sentence in err, (args, err)
        assert err.count("\n") == 1 and out == ""
    subprocess.run(["git", "remote", "remove", "origin"], cwd=tagged, check=True)
    status, _, err = jobs(tagged, "render", "--dataset-version", TAG, "--candidate", "default")
    assert status == 2 and "compute.code_repository is null" in err and "--repository" in err
    (tagged / "conf/local/compute.yml").write_text("compute:\n  kubernetes:\n    backoff_limit: -1\n")
    status, _, err = jobs(tagged, "render", "--dataset-version", TAG, "--candidate", "default")
    assert status == 2 and "compute.kubernetes.backoff_limit in conf/local/compute.yml" in err, err
    (tagged / "conf/local/compute.yml").unlink()
    status, _, err = jobs(tagged.parent, "render", "--dataset-version", TAG, "--candidate", "default")
    assert status == 2 and "has no conf/base" in err
    matrix = "matrix:\n  candidates:\n    custom: {trainer: 'tests.x:Trainer'}\n    commas: {extra_args: {lr0: '1,2'}}\n"
    (tagged / "conf/local/parameters_matrix.yml").write_text(matrix)
    status, _, err = jobs(tagged, "render", "--dataset-version", TAG, "--candidate", "custom", "--repository", "r")
    assert status == 2 and "uses trainer 'tests.x:Trainer'" in err, err
    status, _, err = jobs(tagged, "render", "--dataset-version", TAG, "--candidate", "commas", "--repository", "r")
    assert status == 2 and "holds a comma" in err, err


def test_help_imports_no_heavy_library(tagged):
    probe = ("import sys, runpy; sys.argv = ['jobs', 'submit', '--help']\ntry:\n"
             "    runpy.run_module('cv_pipelines.commands.jobs', run_name='__main__')\nexcept SystemExit: pass\n"
             "print([m for m in ('kubernetes', 'distributed', 'mlflow', 'torch', 'kedro') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=project_env(tagged))
    assert "--strategy" in done.stdout and done.stdout.strip().endswith("[]"), done.stdout + done.stderr


# --- the stand-in API server and the kubernetes provider -----------------------------------------


def rendered(root: Path, command: str | None = CHEAP, **settings_changes) -> tuple[dict, object]:
    """The Job of the default candidate (its command replaced by ``command``) and the settings it used."""
    from cv_pipelines.engines.compute_settings import compute_settings
    from cv_pipelines.engines.kubernetes_job import render_job
    from cv_pipelines.engines.requests import TrainingRequest

    settings = compute_settings("test", root)
    settings = settings.model_copy(update=settings_changes)
    manifest = render_job(TrainingRequest(dataset_version=TAG, candidate="default", env="test"), commit="0" * 40,
                          repository="https://git.example/x.git", settings=settings, candidate_items=[])
    if command is not None:
        manifest["spec"]["template"]["spec"]["containers"][0]["command"] = ["sh", "-c", command]
    return manifest, settings


def kubernetes_settings(settings, tmp_path: Path, server: KubernetesStandIn, token: str | None = None):
    config = tmp_path / f"kubeconfig-{token or 'ok'}"
    config.write_text(yaml.safe_dump(server.kubeconfig(token)))
    return settings.model_copy(update={"kubernetes": settings.kubernetes.model_copy(update={"kubeconfig": str(config)})})


def test_the_stand_in_speaks_the_jobs_api_in_the_clients_own_models(tagged, tmp_path):
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    from cv_pipelines.engines.providers import TRAINING_JOBS_SELECTOR

    manifest, _ = rendered(tagged)
    with KubernetesStandIn() as server:
        (tmp_path / "kubeconfig").write_text(yaml.safe_dump(server.kubeconfig()))
        batch = client.BatchV1Api(config.new_client_from_config(config_file=str(tmp_path / "kubeconfig")))
        raw = lambda call, *a, **kw: json.loads(call(*a, _preload_content=False, **kw).data)  # noqa: E731
        check_model(raw(batch.get_api_resources), "V1APIResourceList")
        created = check_model(raw(batch.create_namespaced_job, "cv-pipelines", manifest), "V1Job")
        assert created.metadata.uid and created.spec.template.spec.containers[0].env[0].name == "CV_CODE_REPOSITORY"
        name = manifest["metadata"]["name"]
        assert check_model(raw(batch.read_namespaced_job, name, "cv-pipelines"), "V1Job").status.active == 1
        server.finish("cv-pipelines", name, succeeded=True)
        job = check_model(raw(batch.read_namespaced_job_status, name, "cv-pipelines"), "V1Job")
        assert [(c.type, c.status) for c in job.status.conditions] == [("Complete", "True")]
        with pytest.raises(ApiException) as taken:
            batch.create_namespaced_job("cv-pipelines", manifest)
        assert taken.value.status == 409 and check_model(json.loads(taken.value.body), "V1Status").reason == "AlreadyExists"
        listed = check_model(raw(batch.list_namespaced_job, "cv-pipelines", label_selector=TRAINING_JOBS_SELECTOR),
                             "V1JobList")
        assert [job.metadata.name for job in listed.items] == [name]
        other = raw(batch.list_namespaced_job, "cv-pipelines", label_selector="app.kubernetes.io/name=other")
        assert check_model(other, "V1JobList").items == []
        deleted = raw(batch.delete_namespaced_job, name, "cv-pipelines", propagation_policy="Background")
        assert check_model(deleted, "V1Status").status == "Success"
        with pytest.raises(ApiException) as gone:
            batch.read_namespaced_job_status(name, "cv-pipelines")
        assert gone.value.status == 404 and check_model(json.loads(gone.value.body), "V1Status").reason == "NotFound"
        with pytest.raises(ValueError, match=r"V1Container has no field\(s\) gpus"):
            check_model({**manifest, "spec": {"template": {"spec": {"containers": [{"name": "a", "gpus": 1}]}}}}, "V1Job")


def test_the_kubernetes_provider_creates_reads_and_deletes_the_job(tagged, tmp_path):
    from cv_pipelines.engines.providers import KubernetesProvider

    manifest, settings = rendered(tagged, command=None)
    with KubernetesStandIn() as server:
        provider = KubernetesProvider(kubernetes_settings(settings, tmp_path, server))
        provider.validate()
        job_id = provider.submit(manifest)
        stored = server.jobs[("cv-pipelines", job_id)]
        env = {v["name"]: v.get("value") for v in container_env(stored)}
        assert env["CV_COMPUTE_PROVIDER"] == "kubernetes" and env["CV_COMPUTE_JOB_ID"] == job_id
        assert provider.status(job_id) == "running"
        server.finish("cv-pipelines", job_id, succeeded=False)
        assert provider.status(job_id) == "failed"
        provider.cancel(job_id)
        assert provider.status(job_id) == "unknown" and ("cv-pipelines", job_id) not in server.jobs
        assert ("DELETE", f"/apis/batch/v1/namespaces/cv-pipelines/jobs/{job_id}") in server.requests


def wait_for(provider, job_id: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while (state := provider.status(job_id)) in ("pending", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
    return state


def test_kubernetes_refusing_the_token_or_unreachable_falls_back_to_local_and_says_so(tagged, tmp_path, caplog):
    from cv_pipelines.engines.providers import KubernetesProvider, LocalProvider, submit_with_strategy

    manifest, settings = rendered(tagged)
    caplog.set_level(logging.INFO, logger="cv_pipelines.engines.providers")
    with KubernetesStandIn() as server:
        refused = KubernetesProvider(kubernetes_settings(settings, tmp_path, server, token="wrong"))
        local = LocalProvider(settings, tmp_path / "jobs")
        (submission, provider) = submit_with_strategy(manifest, [refused, local], "preferred")
        assert submission.provider == "local" and provider is local
        assert "The kubernetes provider cannot run the job (the API server refused the credentials (HTTP 401" in caplog.text
        assert "falling back to local" in caplog.text
        assert wait_for(local, submission.job_id) == "succeeded"
        ran = (tmp_path / "jobs" / submission.job_id / "workspace/ran").read_text().split()
        assert ran == ["local", submission.job_id, TAG]  # the run is told which provider ran it
    caplog.clear()
    # The server is gone now: nothing listens on its port.
    unreachable = KubernetesProvider(kubernetes_settings(settings, tmp_path, server))
    manifest["metadata"]["name"] += "-2"
    submission, _ = submit_with_strategy(manifest, [unreachable, local], "first_available")
    assert submission.provider == "local" and f"the API server {server.url} cannot be reached" in caplog.text


def test_a_submission_refused_falls_back_and_when_every_provider_fails_one_sentence_lists_why(tagged, tmp_path, caplog):
    from cv_pipelines.engines.providers import DaskProvider, KubernetesProvider, LocalProvider, submit_with_strategy
    from cv_pipelines.errors import ExternalServiceError

    manifest, settings = rendered(tagged)
    caplog.set_level(logging.INFO, logger="cv_pipelines.engines.providers")
    with KubernetesStandIn() as server:
        server.job_quota = 0  # the namespace's ResourceQuota is used up: creating is refused with 403
        kubernetes = KubernetesProvider(kubernetes_settings(settings, tmp_path, server))
        local = LocalProvider(settings, tmp_path / "jobs")
        submission, _ = submit_with_strategy(manifest, [kubernetes, local], "preferred")
        assert submission.provider == "local"
        assert "The kubernetes provider cannot run the job (the API server answered HTTP 403 Forbidden: " in caplog.text
        assert "exceeded quota: jobs" in caplog.text and "falling back to local" in caplog.text
        assert wait_for(local, submission.job_id) == "succeeded"

        blocked = tmp_path / "not-a-folder"
        blocked.write_text("")
        dead = settings.dask.model_copy(update={"address": f"tcp://127.0.0.1:{server_port_closed()}",
                                                "connect_timeout_s": 1})
        dask = DaskProvider(settings.model_copy(update={"dask": dead}), tmp_path / "jobs")
        with pytest.raises(ExternalServiceError) as none:
            submit_with_strategy(manifest, [kubernetes, dask, LocalProvider(settings, blocked / "jobs")], "preferred")
    sentence = none.value.message
    assert sentence.startswith(f"No compute provider could run job {manifest['metadata']['name']} (kubernetes: the API")
    assert "; dask: the Dask scheduler at tcp://127.0.0.1:" in sentence and "; local: its jobs folder" in sentence
    assert sentence.count(".") >= 1 and "\n" not in sentence


def test_a_job_submitted_again_is_refused_where_it_runs_and_never_falls_back_to_a_second_run(tagged, tmp_path):
    """The same request at the same commit is the same Job name: a resubmission would train twice."""
    from cv_pipelines.engines.providers import DaskProvider, KubernetesProvider, LocalProvider, submit_with_strategy
    from cv_pipelines.errors import ConfigurationError

    manifest, settings = rendered(tagged)
    name = manifest["metadata"]["name"]
    with KubernetesStandIn() as server:
        kubernetes = KubernetesProvider(kubernetes_settings(settings, tmp_path, server))
        local = LocalProvider(settings, tmp_path / "jobs")
        first, _ = submit_with_strategy(manifest, [kubernetes, local], "preferred")
        assert first.provider == "kubernetes"
        with pytest.raises(ConfigurationError) as again:
            submit_with_strategy(manifest, [kubernetes, local], "preferred")
        assert [m for m, _ in server.requests].count("POST") == 2  # the second create got its 409
    assert again.value.message == (
        f"Job {name} was already submitted to the kubernetes provider (a Job of that name exists in namespace "
        f"cv-pipelines), so it was not submitted again anywhere; follow it with `jobs status kubernetes {name}`, or "
        "pass --name to run the same request as a new job."
    )
    assert not (tmp_path / "jobs").exists()  # nothing was started locally instead

    done, _ = submit_with_strategy(manifest, [local], "preferred")
    assert wait_for(local, done.job_id) == "succeeded"
    dask = DaskProvider(settings, tmp_path / "jobs")  # the same jobs folder: the job ran here already
    for provider in (local, dask):
        with pytest.raises(ConfigurationError, match=rf"already submitted to the {provider.name} provider \(its folder "):
            submit_with_strategy(manifest, [provider], "preferred")


def test_jobs_submit_status_and_cancel_drive_a_job_on_the_cluster_from_the_command_line(tagged, tmp_path,
                                                                                          monkeypatch):
    """The command line end to end, against the stand-in: what it prints, its exit statuses, what the cluster holds."""
    import threading

    from cv_pipelines.commands import jobs as command

    bare = tmp_path / "code.git"  # the repository the job clones: it has the tag and the commit
    subprocess.run(["git", "clone", "--quiet", "--bare", str(tagged), str(bare)], check=True)
    with KubernetesStandIn() as server:
        (tmp_path / "kubeconfig").write_text(yaml.safe_dump(server.kubeconfig()))
        (tagged / "conf/test/compute.yml").write_text(yaml.safe_dump({"compute": {
            "providers": ["kubernetes"], "kubernetes": {"kubeconfig": str(tmp_path / "kubeconfig")}}}))
        submit = ("--env", "test", "submit", "--dataset-version", TAG, "--candidate", "default", "--repository", str(bare))
        status, out, err = jobs(tagged, *submit)
        assert status == 0 and err == "", err
        [(_, job_id)] = list(server.jobs)
        assert out == f"jobs: {job_id} submitted to kubernetes\n"
        annotations = server.jobs[("cv-pipelines", job_id)]["metadata"]["annotations"]
        assert annotations["cv-pipelines.io/code-repository"] == str(bare)
        assert annotations["cv-pipelines.io/code-commit"] == git(tagged, "rev-parse", "HEAD")

        status, _, err = jobs(tagged, *submit)
        assert status == 2 and err.startswith(f"Error: Job {job_id} was already submitted to the kubernetes provider")
        assert jobs(tagged, "--env", "test", "status", "kubernetes", job_id)[1] == f"jobs: {job_id} running\n"
        server.finish("cv-pipelines", job_id, succeeded=True)
        assert jobs(tagged, "--env", "test", "status", "kubernetes", job_id)[1] == f"jobs: {job_id} succeeded\n"
        assert jobs(tagged, "--env", "test", "cancel", "kubernetes", job_id)[:2] == (
            0, f"jobs: {job_id} cancelled on kubernetes\n")
        assert not server.jobs

        # --wait follows the job to its end; a failed job is exit status 1.
        monkeypatch.setattr(command, "WAIT_POLL_S", 0.1)
        threading.Timer(0.5, lambda: server.finish("cv-pipelines", next(iter(server.jobs))[1], succeeded=False)).start()
        status, out, _ = jobs(tagged, *submit, "--name", "cv-train-again", "--wait")
        assert (status, out.splitlines()) == (1, ["jobs: cv-train-again submitted to kubernetes",
                                                  "jobs: cv-train-again failed"])

        # fastest reads the environment's MLflow store (the project's embedded one: no training there yet).
        status, out, err = jobs(tagged, *submit, "--strategy", "fastest", "--name", "cv-train-fast")
        assert (status, out) == (0, "jobs: cv-train-fast submitted to kubernetes\n")
        assert err == "jobs: By median training time: kubernetes unknown; trying kubernetes first.\n"

        # A repository that cannot be asked: said on stderr, and the cluster may still reach it.
        status, _, err = jobs(tagged, *submit[:-1], str(tmp_path / "gone.git"), "--name", "cv-train-elsewhere")
        assert status == 0 and err.startswith("jobs: not checked that the job can fetch its code and tag: ")
        assert f"{tmp_path / 'gone.git'} could not be asked for its refs" in err


def test_jobs_submit_refuses_a_commit_or_tag_the_cloned_repository_lacks_before_anything_is_submitted(tagged, tmp_path):
    bare = tmp_path / "code.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(tagged), str(bare)], check=True)
    (tagged / "conf/test/compute.yml").write_text(yaml.safe_dump({"compute": {"providers": ["local"]}}))
    base = ("--env", "test", "submit", "--candidate", "default", "--repository", str(bare))
    tagged_commit = git(tagged, "rev-parse", "HEAD")
    subprocess.run(["git", "-c", "user.email=t@example.org", "-c", "user.name=t", "commit", "--quiet", "--allow-empty",
                    "-m", "not pushed"], cwd=tagged, check=True)
    unpushed = git(tagged, "rev-parse", "HEAD")
    status, _, err = jobs(tagged, *base, "--dataset-version", TAG)
    assert (status, err) == (2, f"Error: Commit {unpushed[:12]} is on no branch or tag of {bare}, which the job "
                                "clones; push it (git push), or pass --commit with one that is, then submit again.\n")
    subprocess.run(["git", "tag", "data/demo/v2"], cwd=tagged, check=True)
    status, _, err = jobs(tagged, *base, "--dataset-version", "data/demo/v2", "--commit", tagged_commit)
    assert status == 2 and err.startswith(f"Error: The dataset version tag data/demo/v2 is not in {bare}, which the")
    subprocess.run(["git", "push", "--quiet", str(bare), "HEAD:refs/heads/other"], cwd=tagged, check=True)
    subprocess.run(["git", "tag", "--force", TAG, "other"], cwd=bare, check=True, capture_output=True)
    status, _, err = jobs(tagged, *base, "--dataset-version", TAG, "--commit", tagged_commit)
    assert status == 2 and err.startswith(
        f"Error: The dataset version tag {TAG} names commit {unpushed[:12]} in {bare} but {tagged_commit[:12]} here")
    assert not (tagged / "data/jobs").exists()  # nothing was submitted


def named(manifest: dict, suffix: str) -> dict:
    """``manifest`` as another Job: its name with ``suffix``."""
    other = copy.deepcopy(manifest)
    other["metadata"]["name"] += suffix
    return other


def test_the_queue_strategy_picks_the_provider_with_the_fewest_jobs_waiting_or_running(tagged, tmp_path, caplog):
    from cv_pipelines.engines.providers import KubernetesProvider, LocalProvider, submit_with_strategy

    manifest, settings = rendered(tagged)
    slow, _ = rendered(tagged, command="sleep 30")
    caplog.set_level(logging.INFO, logger="cv_pipelines.engines.providers")
    with KubernetesStandIn() as server:
        kubernetes = KubernetesProvider(kubernetes_settings(settings, tmp_path, server))
        local = LocalProvider(settings, tmp_path / "jobs")
        for suffix in ("-a", "-b", "-ended"):
            kubernetes.submit(named(manifest, suffix))
        server.finish("cv-pipelines", manifest["metadata"]["name"] + "-ended", succeeded=True)  # not counted
        foreign = named(manifest, "-foreign")
        foreign["metadata"]["labels"]["app.kubernetes.io/name"] = "someone-else"  # not this project's: not counted
        kubernetes.submit(foreign)
        busy = local.submit(named(slow, "-busy"))
        assert (kubernetes.queued(), local.queued()) == (2, 1)

        first, _ = submit_with_strategy(named(manifest, "-1"), [kubernetes, local], "queue")
        assert first.provider == "local"
        assert "Jobs waiting or running: kubernetes 2, local 1; trying local first." in caplog.text
        assert wait_for(local, first.job_id) == "succeeded"

        local.cancel(busy)
        for suffix in ("-a", "-b"):
            server.finish("cv-pipelines", manifest["metadata"]["name"] + suffix, succeeded=False)
        second, _ = submit_with_strategy(named(manifest, "-2"), [kubernetes, local], "queue")
        assert second.provider == "kubernetes"  # 0 and 0: the configured order decides
        assert "Jobs waiting or running: kubernetes 0, local 0; trying kubernetes first." in caplog.text


def test_fastest_and_cheapest_order_the_providers_by_the_trainings_they_ran_before(tagged, tmp_path, caplog):
    """Durations come from the MLflow runs the providers tagged: finished trainings of this candidate only."""
    from mlflow import MlflowClient

    from cv_pipelines.engines.providers import KubernetesProvider, LocalProvider, submit_with_strategy
    from cv_pipelines.models.runs import job_hours_by_provider

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("cv_pipelines")
    hour = 3_600_000

    def training(provider: str, hours: float, candidate: str = "default", status: str = "FINISHED", training="true"):
        run = client.create_run(experiment, start_time=hour, tags={
            "cv_pipelines.training": training, "cv_pipelines.compute.provider": provider,
            "cv_pipelines.compute.candidate": candidate})
        client.set_terminated(run.info.run_id, status=status, end_time=int(hour + hours * hour))

    for hours in (0.5, 0.75, 0.25):
        training("kubernetes", hours)
    training("local", 2.0)
    training("local", 0.1, candidate="small")  # another candidate
    training("local", 0.1, status="FAILED")  # a failure measures nothing
    training("local", 0.1, training="false")  # an evaluation run
    history = job_hours_by_provider(client, "default")
    assert sorted(history["kubernetes"]) == [0.25, 0.5, 0.75] and history["local"] == [2.0]
    assert job_hours_by_provider(client, "nobody") == {}

    manifest, settings = rendered(tagged)
    caplog.set_level(logging.INFO, logger="cv_pipelines.engines.providers")
    with KubernetesStandIn() as server:
        kubernetes = KubernetesProvider(kubernetes_settings(settings, tmp_path, server))
        local = LocalProvider(settings, tmp_path / "jobs")
        fastest, _ = submit_with_strategy(named(manifest, "-f"), [local, kubernetes], "fastest", history)
        assert fastest.provider == "kubernetes"
        assert "By median training time: kubernetes 0.50h, local 2.00h; trying kubernetes first." in caplog.text
        free, _ = submit_with_strategy(named(manifest, "-c"), [kubernetes, local], "cheapest", history,
                                       {"local": 0.0})
        assert free.provider == "local"  # free however long; kubernetes has no price: unknown, so last
        assert "By cost (price x median training time): local 0.00 per job, kubernetes unknown;" in caplog.text
        priced, _ = submit_with_strategy(named(manifest, "-p"), [local, kubernetes], "cheapest", history,
                                         {"local": 1.0, "kubernetes": 3.0})
        assert priced.provider == "kubernetes"  # 3.0 x 0.5 h = 1.5 against 1.0 x 2 h
        unmeasured, _ = submit_with_strategy(named(manifest, "-u"), [local, kubernetes], "fastest", {})
        assert unmeasured.provider == "local"  # nothing measured: the configured order
        assert "By median training time: local unknown, kubernetes unknown; trying local first." in caplog.text


def server_port_closed() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_dask_provider_runs_the_job_on_a_local_cluster_and_local_status_and_cancel_work(tagged, tmp_path):
    from cv_pipelines.engines.providers import DaskProvider, LocalProvider

    manifest, settings = rendered(tagged)
    dask = DaskProvider(settings, tmp_path / "jobs")
    try:
        dask.validate()
        job_id = dask.submit(manifest)
        assert dask.wait(job_id) == "succeeded"
        assert dask.queued() == 0  # counted on the scheduler: the one task is done
    finally:
        dask.close()
    assert (tmp_path / "jobs" / job_id / "workspace/ran").read_text().split() == ["dask", job_id, TAG]

    slow, _ = rendered(tagged, command="sleep 30")
    local = LocalProvider(settings, tmp_path / "local")
    job_id = local.submit(slow)
    assert local.status(job_id) == "running"
    local.cancel(job_id)
    assert wait_for(local, job_id, timeout=10) == "failed"
    status, out, _ = jobs(tagged, "--env", "test", "status", "local", "no-such-job")
    assert status == 0 and "no-such-job unknown" in out


def test_unknown_providers_strategies_and_a_refused_status_or_cancel_are_one_sentence(tagged, tmp_path):
    from cv_pipelines.engines.providers import KubernetesProvider, make_provider, submit_with_strategy
    from cv_pipelines.errors import ConfigurationError, ExternalServiceError

    manifest, settings = rendered(tagged)
    with pytest.raises(ConfigurationError, match="compute provider 'slurm' is not one of local, dask, kubernetes"):
        make_provider("slurm", settings, tmp_path)
    with pytest.raises(ConfigurationError, match="compute strategy 'slowest' is not one of preferred, first_available, queue, fastest, cheapest"):
        submit_with_strategy(manifest, [], "slowest")
    with KubernetesStandIn() as server:
        refused = KubernetesProvider(kubernetes_settings(settings, tmp_path, server, token="wrong"))
        with pytest.raises(ExternalServiceError, match=r"Kubernetes could not report on Job j: .*HTTP 401"):
            refused.status("j")
        with pytest.raises(ExternalServiceError, match=r"Kubernetes could not delete Job j: .*HTTP 401"):
            refused.cancel("j")
