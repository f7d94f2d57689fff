"""The one way the project takes a lock file: an OS lock with a deadline.

An OS-level lock (``flock``): the kernel releases it when its holder dies, so a
``kill -9`` never leaves a stale lock behind. A holder may also leave a note of who it
is (``<lock>.holder``: pid, host, what it is doing, since when), so that whoever times
out waiting can say which process to wait for, or to stop if it hangs.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock, Timeout

from cv_pipelines.files.atomic import write_text_atomically


@dataclass(frozen=True)
class LockHolder:
    """Who took a lock, from its holder note."""

    pid: int
    host: str
    what: str
    since: datetime

    def is_gone(self) -> bool:
        """True when the note is stale: its process, on this host, no longer exists."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False  # exists, owned by someone else
        return False

    def describe(self, now: datetime | None = None) -> str:
        """``an ingestion (pid 42 on host, for 12 s since 02:31:05 UTC)``."""
        held = ((now or datetime.now(UTC)) - self.since).total_seconds()
        return f"{self.what} (pid {self.pid} on {self.host}, for {held:.0f} s since {self.since:%H:%M:%S} UTC)"


def _holder_path(lock_path: Path) -> Path:
    return lock_path.with_name(lock_path.name + ".holder")


def lock_holder(lock_path: Path | str) -> LockHolder | None:
    """The holder note of the lock file ``lock_path``, unless there is none or it is stale or unreadable."""
    try:
        note = json.loads(_holder_path(Path(lock_path)).read_text(encoding="utf-8"))
        holder = LockHolder(
            int(note["pid"]), str(note["host"]), str(note["what"]), datetime.fromisoformat(note["since"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return None if holder.is_gone() else holder


@contextmanager
def hold_lock(
    lock_path: Path | str,
    *,
    timeout_s: float,
    busy: Callable[[Path, float], BaseException],
    holder: str | None = None,
) -> Iterator[None]:
    """Hold the lock file ``lock_path`` for the ``with`` block, waiting at most ``timeout_s``.

    Args:
        lock_path: the lock file; its folder must exist.
        timeout_s: how long to wait for another holder to finish.
        busy: builds the error raised when the wait times out, from the lock path and
            the timeout, so each caller names its own fix (:func:`lock_holder` says who holds it).
        holder: what this holder does (``"an ingestion"``); when given, a holder note
            is left beside the lock while it is held.

    Raises:
        The exception ``busy`` returns, when the lock stays taken for ``timeout_s``.
    """
    path = Path(lock_path)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=timeout_s)
    except Timeout:
        raise busy(path, timeout_s) from None
    try:
        if holder is not None:
            note = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "what": holder,
                "since": datetime.now(UTC).isoformat(),
            }
            write_text_atomically(_holder_path(path), json.dumps(note), durable=False)
        yield
    finally:
        if holder is not None:
            with contextlib.suppress(OSError):
                _holder_path(path).unlink()
        lock.release()
