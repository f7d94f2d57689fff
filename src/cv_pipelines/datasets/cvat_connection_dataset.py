"""``CvatConnectionDataset``: the CVAT server the labeling pipeline talks to, built from credentials."""

from __future__ import annotations

from typing import Any

from kedro.io import AbstractDataset

from cv_pipelines.labeling.cvat_connection import CvatConnection


class CvatConnectionDataset(AbstractDataset[None, CvatConnection]):
    """Load-only: the ``CvatConnection`` of the catalog's ``credentials`` entry, overridable by the environment.

    ``CVAT_HOST`` and ``CVAT_ACCESS_TOKEN`` win over the credentials, so a scheduler can
    inject them. The secret lives in this process only: ``_describe`` (what logs and
    kedro-viz show) names the host, never the secret, and nothing is ever saved.

    Args:
        credentials: the ``cvat`` entry of ``credentials.yml`` (``host`` and ``access_token``,
            or ``username`` and ``password``); empty when CVAT is configured by the environment.
        metadata: kedro-viz and other plugins' metadata.
    """

    def __init__(self, *, credentials: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None) -> None:
        self._credentials = dict(credentials or {})
        self.metadata = metadata

    def load(self) -> CvatConnection:
        """The connection; a one-sentence ``ConfigurationError`` naming the fix when none is configured."""
        return self._connection()

    def check_loadable(self) -> None:
        """Fail before any node runs when CVAT is not configured (the project's hooks call it)."""
        # Not self.load(): Kedro wraps every load's error in a DatasetError, traceback and all.
        self._connection()

    def _connection(self) -> CvatConnection:
        from cv_pipelines.labeling.cvat_connection import resolve_cvat_connection

        return resolve_cvat_connection(self._credentials)

    def save(self, data: None) -> None:
        """Refused: a connection is configuration, not data."""
        raise NotImplementedError("the CVAT connection is configured in credentials.yml or the environment")

    def _describe(self) -> dict[str, Any]:
        return {"host": self._credentials.get("host", "from CVAT_HOST")}
