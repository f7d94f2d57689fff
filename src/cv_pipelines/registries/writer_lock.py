"""The lock that every writer of the image store and the registries takes.

Ingestion, the COCO import, labeling pulls, exclusions and snapshots all write under
it, so two of them never interleave their parts or race on the same store path.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cv_pipelines.files.locks import hold_lock

LOCK_NAME = ".writer.lock"


class RegistryLockedError(RuntimeError):
    """Another process holds the registries' writer lock for longer than we may wait."""


def _busy(lock_path: Path, timeout_s: float) -> RegistryLockedError:
    return RegistryLockedError(
        f"Another ingestion or import is writing to {lock_path.parent} (lock file {lock_path}) "
        f"and did not finish within {timeout_s:.0f} s; run again once it is done, or raise "
        "ingestion.lock_timeout_s."
    )


@contextmanager
def writer_lock(registry_dir: Path | str, *, timeout_s: float) -> Iterator[None]:
    """Hold the writer lock of the registries under ``registry_dir`` (which must exist).

    Raises:
        RegistryLockedError: another writer kept it for ``timeout_s`` seconds.
    """
    with hold_lock(Path(registry_dir) / LOCK_NAME, timeout_s=timeout_s, busy=_busy):
        yield
