"""A training request: which dataset version to train a matrix candidate on, where, and how it is configured."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: The providers a request may name (``engines.providers``).
PROVIDER_NAMES = ("local", "dask", "kubernetes")
_ENV_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class TrainingRequest(BaseModel):
    """One training of candidate ``candidate`` on dataset version ``dataset_version`` (a git tag).

    ``params`` are further ``kedro run --params`` items (``training.epochs=1``), applied
    after the candidate's; ``provider`` None lets the strategy choose.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset_version: str = Field(min_length=1)
    candidate: str = Field(min_length=1)
    env: str = "local"
    provider: str | None = None
    params: tuple[str, ...] = ()

    @field_validator("env")
    @classmethod
    def _env_is_a_folder_name(cls, env: str) -> str:
        if not _ENV_NAME.fullmatch(env):
            raise ValueError(f"env {env!r} is not a conf/ folder name")
        return env

    @field_validator("provider")
    @classmethod
    def _provider_is_known(cls, provider: str | None) -> str | None:
        if provider is not None and provider not in PROVIDER_NAMES:
            raise ValueError(f"provider {provider!r} is not one of {', '.join(PROVIDER_NAMES)}")
        return provider

    @field_validator("params")
    @classmethod
    def _params_are_single_items(cls, params: tuple[str, ...]) -> tuple[str, ...]:
        for item in params:
            # kedro run --params splits on commas: an item holding one would become two.
            if "=" not in item or "," in item:
                raise ValueError(f"param {item!r} is not one key=value item without commas")
        return params
