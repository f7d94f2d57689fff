"""``compute`` of ``conf/<env>/compute.yml``, validated: the defaults of rendered Jobs and of the providers."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cv_pipelines.errors import ConfigurationError

#: The compute providers (``engines.providers``) and the strategies that pick one.
ProviderName = Literal["local", "dask", "kubernetes"]
Strategy = Literal["preferred", "first_available", "queue", "fastest", "cheapest"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DvcRemoteSettings(_Strict):
    """The DVC remote a job pulls from (None url: the committed default remote)."""

    url: str | None = None
    endpoint_url: str | None = None
    region: str | None = None


class ResourceSettings(_Strict):
    """A job's container resources: Kubernetes quantities, and whole GPUs (``nvidia.com/gpu``)."""

    cpu: str = "4"
    memory: str = "16Gi"
    gpus: int = Field(0, ge=0)


class KubernetesSettings(_Strict):
    """``compute.kubernetes``: where and how a training Job runs."""

    namespace: str = "cv-pipelines"
    image: str
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    service_account: str | None = None
    secret: str
    secret_keys: dict[str, str]
    resources: ResourceSettings = ResourceSettings()
    backoff_limit: int = Field(1, ge=0)
    active_deadline_seconds: int = Field(21600, ge=1)
    ttl_seconds_after_finished: int = Field(86400, ge=0)
    kubeconfig: str | None = None
    context: str | None = None


class DaskSettings(_Strict):
    """``compute.dask``: a scheduler's address, or None for a ``LocalCluster`` of ``n_workers``."""

    address: str | None = None
    n_workers: int = Field(1, ge=1)
    connect_timeout_s: float = Field(10, gt=0)


class ComputeSettings(_Strict):
    """``compute``: the code and data a job fetches, the providers and how one is chosen."""

    code_repository: str | None = None
    dvc_remote: DvcRemoteSettings = DvcRemoteSettings()
    strategy: Strategy = "preferred"
    providers: list[ProviderName] = Field(min_length=1)
    price_per_hour: dict[str, float] = {}

    @field_validator("price_per_hour")
    @classmethod
    def _priced_providers_exist(cls, prices: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(prices) - set(get_args(ProviderName)))
        if unknown:
            raise ValueError(f"{', '.join(unknown)} is not a provider ({', '.join(get_args(ProviderName))})")
        return prices

    kubernetes: KubernetesSettings
    dask: DaskSettings = DaskSettings()


def compute_settings(env: str | None = None, root: Path | None = None) -> ComputeSettings:
    """The ``compute`` settings a ``--env <env>`` run reads; a value they refuse is one sentence."""
    from kedro.config import MissingConfigException

    from cv_pipelines.config.loader import project_config

    try:
        values = project_config("compute", env, root).get("compute") or {}
    except MissingConfigException:
        raise ConfigurationError(
            f"{root or 'this folder'} has no conf/base (or no conf/{env}), so there are no compute settings; run "
            "from the project's root or pass --project-path."
        ) from None
    try:
        return ComputeSettings.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigurationError(
            f"compute.{where} in conf/{env or 'local'}/compute.yml (or conf/base) is invalid ({first['msg']}); "
            "fix it there."
        ) from None
