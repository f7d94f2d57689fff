"""The one way the project takes a lock file: an OS lock with a deadline.

An OS-level lock (``flock``): the kernel releases it when its holder dies, so a
``kill -9`` never leaves a stale lock behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout


@contextmanager
def hold_lock(
    lock_path: Path | str,
    *,
    timeout_s: float,
    busy: Callable[[Path, float], BaseException],
) -> Iterator[None]:
    """Hold the lock file ``lock_path`` for the ``with`` block, waiting at most ``timeout_s``.

    Args:
        lock_path: the lock file; its folder must exist.
        timeout_s: how long to wait for another holder to finish.
        busy: builds the error raised when the wait times out, from the lock path and
            the timeout, so each caller names its own fix.

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
        yield
    finally:
        lock.release()
