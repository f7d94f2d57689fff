"""The lock that every writer of the image store and the registries takes.

Ingestion, the COCO import, labeling pulls, exclusions and snapshots all write under
it, so two of them never interleave their parts or race on the same store path.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cv_pipelines.errors import ExternalServiceError
from cv_pipelines.files.locks import hold_lock, lock_holder

LOCK_NAME = ".writer.lock"


class RegistryLockedError(ExternalServiceError):
    """Another process holds the registries' writer lock for longer than we may wait.

    One sentence (exit status 3, like a busy service): which lock, who holds it, what to do.
    """


def _busy(lock_path: Path, timeout_s: float) -> RegistryLockedError:
    holder = lock_holder(lock_path)
    who = holder.describe() if holder else "another process (an ingestion, import, labeling pull or snapshot)"
    stop = f"`kill {holder.pid}`" if holder else "stop it"
    return RegistryLockedError(
        f"The registries' writer lock {lock_path} is held by {who} and was not released within "
        f"{timeout_s:g} s; run again once that process has finished, or, if it hangs, {stop} and "
        "run again (ingestion.lock_timeout_s sets how long to wait)."
    )


@contextmanager
def writer_lock(
    registry_dir: Path | str, *, timeout_s: float, holder: str = "a writer of the registries"
) -> Iterator[None]:
    """Hold the writer lock of the registries under ``registry_dir`` (which must exist).

    ``holder`` says what this writer does (``"an ingestion"``), for whoever waits on it.

    Raises:
        RegistryLockedError: another writer kept it for ``timeout_s`` seconds.
    """
    with hold_lock(Path(registry_dir) / LOCK_NAME, timeout_s=timeout_s, busy=_busy, holder=holder):
        yield
