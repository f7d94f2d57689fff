"""How to reach CVAT: host and secrets from credentials.yml, overridable by the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from cv_pipelines.errors import ConfigurationError

_HOW_TO = (
    "add a 'cvat' entry with 'host' and 'access_token' (or 'username' and 'password') to "
    "conf/local/credentials.yml (see conf/local/credentials.yml.example), or set CVAT_HOST "
    "and CVAT_ACCESS_TOKEN"
)


class CvatConnection(BaseModel):
    """A CVAT server and the secret to reach it; secrets print as '**********'."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str
    access_token: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None

    def __repr__(self) -> str:  # never show a secret, even its length
        who = "token" if self.access_token else f"user {self.username}"
        return f"CvatConnection(host={self.host!r}, auth={who})"

    __str__ = __repr__


def resolve_cvat_connection(
    credentials: dict[str, Any] | None, environ: dict[str, str] | None = None
) -> CvatConnection:
    """Merge ``credentials.yml``'s ``cvat`` entry with ``CVAT_HOST``/``CVAT_ACCESS_TOKEN``."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    merged: dict[str, Any] = dict(credentials or {})
    if env.get("CVAT_HOST"):
        merged["host"] = env["CVAT_HOST"]
    if env.get("CVAT_ACCESS_TOKEN"):
        merged["access_token"] = env["CVAT_ACCESS_TOKEN"]
        merged.pop("username", None)
        merged.pop("password", None)
    if not merged.get("host"):
        raise ConfigurationError(f"No CVAT server is configured: {_HOW_TO}.")
    has_token = bool(merged.get("access_token"))
    has_password = bool(merged.get("username")) and bool(merged.get("password"))
    if not (has_token or has_password):
        raise ConfigurationError(f"No CVAT secret is configured for {merged['host']}: {_HOW_TO}.")
    try:
        return CvatConnection.model_validate(merged)
    except ValidationError as exc:
        keys = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors())
        raise ConfigurationError(f"The 'cvat' credentials entry has invalid keys ({keys}): {_HOW_TO}.") from None
