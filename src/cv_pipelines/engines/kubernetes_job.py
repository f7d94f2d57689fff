"""A training as a Kubernetes ``batch/v1`` Job: clone the code at a commit, ``dvc pull`` a dataset version, train.

The Job's container runs ``CONTAINER_SCRIPT`` (``sh -c``), configured by its environment
only, so the same command runs as a local process (the ``local`` provider, the tests):

1. ``git clone`` the code repository and check out the dataset version's tag;
2. ``dvc pull`` the pointer files of that tag (the image store and the registries as the
   version froze them) into the clone's DVC cache and working tree;
3. check out the code commit (the data stays: DVC's outputs are git-ignored);
4. ``kedro run --pipelines export,training,evaluation,deployment --params dataset_version=<tag>,...``.

The tracking URI and the object store's keys come from a Kubernetes Secret
(``secretKeyRef``), never as values in the manifest.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cv_pipelines.engines.compute_settings import ComputeSettings
from cv_pipelines.engines.requests import TrainingRequest
from cv_pipelines.errors import ConfigurationError

#: A fresh container has no export: ``export`` must run before training reads one, so it
#: comes first (the issue names training, evaluation and deployment).
JOB_PIPELINES = "export,training,evaluation,deployment"
#: The Kubernetes schema version rendered manifests are checked against (kubernetes-validate's bundled one).
SCHEMA_VERSION = "1.37.0"
LABEL_PREFIX = "cv-pipelines.io"
WORKSPACE = "/workspace"

CONTAINER_SCRIPT = """\
set -eu
project="$CV_WORKSPACE/project"
git clone --quiet "$CV_CODE_REPOSITORY" "$project"
cd "$project"
git -c advice.detachedHead=false checkout --quiet "$CV_DATASET_VERSION"
if [ -n "${CV_DVC_REMOTE_URL:-}" ]; then
  dvc remote add --local --force --default job "$CV_DVC_REMOTE_URL"
  if [ -n "${CV_DVC_REMOTE_ENDPOINT:-}" ]; then dvc remote modify --local job endpointurl "$CV_DVC_REMOTE_ENDPOINT"; fi
fi
# The dataset version's own pointer files: its image store and registries, exactly as tagged.
dvc pull --quiet $(git ls-files '*.dvc')
git -c advice.detachedHead=false checkout --quiet "$CV_CODE_COMMIT"
export CV_PIPELINES_PROJECT_ROOT="$project" PYTHONPATH="$project/src${PYTHONPATH:+:$PYTHONPATH}"
exec kedro run --pipelines "$CV_KEDRO_PIPELINES" --env "$CV_KEDRO_ENV" --params "$CV_KEDRO_PARAMS"
"""

_LABEL_INVALID = re.compile(r"[^A-Za-z0-9._-]+")
_NAME_INVALID = re.compile(r"[^a-z0-9-]+")


def label_value(text: str) -> str:
    """``text`` as a valid label value: at most 63 of ``[A-Za-z0-9._-]``, alphanumeric at both ends."""
    return _LABEL_INVALID.sub("-", text)[:63].strip("._-")


def job_name(request: TrainingRequest, commit: str) -> str:
    """A DNS-1123 name that is the same for the same request and commit (a resubmission is refused, 409)."""
    digest = hashlib.sha256(repr((request.model_dump(), commit)).encode()).hexdigest()[:10]
    candidate = _NAME_INVALID.sub("-", request.candidate.lower()).strip("-")[:30] or "default"
    return f"cv-train-{candidate}-{digest}"


def candidate_params(candidate: str, parameters: Mapping[str, Any]) -> list[str]:
    """``kedro run --params`` items that give ``training`` the overrides of matrix candidate ``candidate``.

    Raises:
        ConfigurationError: the candidate is unknown, invalid, or needs a trainer a job cannot run.
    """
    from cv_pipelines.models.matrix import DEFAULT_CANDIDATE, candidate_names, candidate_parameters, select

    matrix = parameters.get("matrix") or {}
    select(candidate_names(matrix), [candidate], None)  # an unknown name: the matrix's own sentence
    if candidate == DEFAULT_CANDIDATE and not (matrix.get("candidates") or {}):
        return []
    trainer = candidate_parameters(candidate, parameters["training"], matrix)["trainer"]
    if trainer != "ultralytics":
        raise ConfigurationError(
            f"matrix candidate {candidate} uses trainer {trainer!r}, but a training job runs the training "
            "pipeline, which trains with Ultralytics; pick an Ultralytics candidate."
        )
    overrides = {k: v for k, v in dict(matrix["candidates"][candidate] or {}).items() if k != "trainer"}
    extra = overrides.pop("extra_args", None) or {}
    items = [f"training.{key}={value}" for key, value in overrides.items()]
    items += [f"training.extra_args.{key}={value}" for key, value in extra.items()]
    for item in items:
        if "," in item:  # kedro run --params splits on commas
            raise ConfigurationError(
                f"matrix candidate {candidate}'s override {item!r} holds a comma, which `kedro run --params` "
                "cannot pass; write it without one."
            )
    return items


def _env_from_secret(settings: ComputeSettings) -> list[dict[str, Any]]:
    secret = settings.kubernetes.secret
    return [
        {"name": variable, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
        for variable, key in settings.kubernetes.secret_keys.items()
    ]


def _resources(settings: ComputeSettings, gpus: int) -> dict[str, Any]:
    wanted = settings.kubernetes.resources
    requests = {"cpu": wanted.cpu, "memory": wanted.memory}
    limits: dict[str, Any] = {"memory": wanted.memory}
    if gpus:  # an extended resource: a limit only (its request then equals it)
        limits["nvidia.com/gpu"] = gpus
    return {"requests": requests, "limits": limits}


def job_environment(
    request: TrainingRequest, *, commit: str, repository: str, settings: ComputeSettings, name: str, gpus: int
) -> list[dict[str, Any]]:
    """The container's environment: what ``CONTAINER_SCRIPT`` reads, then the Secret's variables."""
    from cv_pipelines.config.offline import TELEMETRY_OFF

    params = [f"dataset_version={request.dataset_version}", *request.params]
    if gpus == 1:  # several GPUs need a device list, which --params cannot carry (its commas)
        params.append("training.device=0")
    remote = settings.dvc_remote
    plain = {
        "CV_CODE_REPOSITORY": repository,
        "CV_CODE_COMMIT": commit,
        "CV_DATASET_VERSION": request.dataset_version,
        "CV_TRAINING_CANDIDATE": request.candidate,
        "CV_KEDRO_PIPELINES": JOB_PIPELINES,
        "CV_KEDRO_ENV": request.env,
        "CV_KEDRO_PARAMS": ",".join(params),
        "CV_WORKSPACE": WORKSPACE,
        "CV_DVC_REMOTE_URL": remote.url or "",
        "CV_DVC_REMOTE_ENDPOINT": remote.endpoint_url or "",
        "AWS_DEFAULT_REGION": remote.region or "",
        "CV_COMPUTE_PROVIDER": request.provider or "kubernetes",
        "CV_COMPUTE_JOB_ID": name,
        **TELEMETRY_OFF,
    }
    return [{"name": key, "value": value} for key, value in plain.items()] + _env_from_secret(settings)


def render_job(
    request: TrainingRequest,
    *,
    commit: str,
    repository: str,
    settings: ComputeSettings,
    candidate_items: list[str],
    image: str | None = None,
    gpus: int | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """The ``batch/v1`` Job (a plain dict, as ``kubectl apply`` and the client take it) of ``request``."""
    k8s = settings.kubernetes
    gpus = k8s.resources.gpus if gpus is None else gpus
    request = request.model_copy(update={"params": (*candidate_items, *request.params)})
    name = name or job_name(request, commit)
    labels = {
        "app.kubernetes.io/name": "cv-pipelines",
        "app.kubernetes.io/component": "training",
        f"{LABEL_PREFIX}/dataset-version": label_value(request.dataset_version),
        f"{LABEL_PREFIX}/code-commit": label_value(commit),
        f"{LABEL_PREFIX}/candidate": label_value(request.candidate),
    }
    # Labels are trimmed and sanitised for selectors; the exact values live here.
    annotations = {
        f"{LABEL_PREFIX}/dataset-version": request.dataset_version,
        f"{LABEL_PREFIX}/code-commit": commit,
        f"{LABEL_PREFIX}/code-repository": repository,
        f"{LABEL_PREFIX}/candidate": request.candidate,
    }
    container = {
        "name": "train",
        "image": image or k8s.image,
        "imagePullPolicy": k8s.image_pull_policy,
        "command": ["sh", "-c", CONTAINER_SCRIPT],
        "env": job_environment(request, commit=commit, repository=repository, settings=settings, name=name, gpus=gpus),
        "resources": _resources(settings, gpus),
        "volumeMounts": [{"name": "workspace", "mountPath": WORKSPACE}],
    }
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": [{"name": "workspace", "emptyDir": {}}],
    }
    if k8s.service_account:
        pod["serviceAccountName"] = k8s.service_account
    if gpus:
        pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": k8s.namespace, "labels": labels, "annotations": annotations},
        "spec": {
            "backoffLimit": k8s.backoff_limit,
            "activeDeadlineSeconds": k8s.active_deadline_seconds,
            "ttlSecondsAfterFinished": k8s.ttl_seconds_after_finished,
            "template": {"metadata": {"labels": dict(labels), "annotations": dict(annotations)}, "spec": pod},
        },
    }


def manifest_yaml(manifest: Mapping[str, Any]) -> str:
    """``manifest`` as YAML for ``kubectl apply -f``: keys in order, the script as a literal block."""
    import yaml

    class _Dumper(yaml.SafeDumper):
        pass

    def _text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, _text)
    return yaml.dump(dict(manifest), Dumper=_Dumper, sort_keys=False)


def validate_manifest(manifest: Mapping[str, Any], version: str = SCHEMA_VERSION) -> None:
    """Check ``manifest`` against the Kubernetes schema of ``version``, offline (bundled with kubernetes-validate).

    Raises:
        kubernetes_validate.ValidationError: a field is unknown, missing or of the wrong type.
    """
    import kubernetes_validate

    kubernetes_validate.validate(dict(manifest), version, strict=True)


def code_repository_of(root: Path, settings: ComputeSettings) -> str:
    """The repository a job clones: ``compute.code_repository``, else this clone's ``origin`` remote."""
    import subprocess

    if settings.code_repository:
        return settings.code_repository
    origin = subprocess.run(
        ["git", "remote", "get-url", "origin"], cwd=root, capture_output=True, text=True, check=False
    ).stdout.strip()
    if not origin:
        raise ConfigurationError(
            f"compute.code_repository is null and {root} has no origin remote, so a job has no code to clone; "
            "set compute.code_repository in conf/<env>/compute.yml or pass --repository."
        )
    return origin


def with_provider(manifest: Mapping[str, Any], provider: str) -> dict[str, Any]:
    """A copy of ``manifest`` whose container tells the run (``CV_COMPUTE_PROVIDER``) which provider ran it."""
    import copy

    changed = copy.deepcopy(dict(manifest))
    for variable in changed["spec"]["template"]["spec"]["containers"][0]["env"]:
        if variable["name"] == "CV_COMPUTE_PROVIDER":
            variable["value"] = provider
    return changed


def container_process(
    manifest: Mapping[str, Any], secret_values: Mapping[str, str], workspace: Path
) -> tuple[list[str], dict[str, str]]:
    """The Job's container as a local process: its argv and environment (to add to a base environment).

    ``secret_values`` holds the values of the variables the Secret would set, by variable
    name (the local provider: its own environment's); ``workspace`` replaces the emptyDir.
    """
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for variable in container["env"]:
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        elif variable["name"] in secret_values:
            env[variable["name"]] = secret_values[variable["name"]]
    env["CV_WORKSPACE"] = str(workspace)
    return list(container["command"]), env
