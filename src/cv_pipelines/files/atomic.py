"""Writes that a crash can interrupt without leaving a half-written file.

Every writer of the project goes through a sibling temporary file and an atomic
rename, so a reader sees the old file or the new one, never part of one.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path


def write_atomically_with(
    target: Path | str, write: Callable[[Path], object], *, durable: bool = True, suffix: str = ".tmp"
) -> Path:
    """Let ``write`` fill a sibling temporary file, then rename it to ``target``.

    Args:
        target: the file to create or replace; its folder must exist.
        write: writes the whole content into the path it is given.
        durable: flush the temporary file to disk before the rename (and the folder
            after it), so the new content survives a power cut once this returns.
        suffix: the temporary file's suffix (``.{name}.{random}{suffix}``).

    Returns:
        ``target``, as a ``Path``.
    """
    target = Path(target)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}{suffix}")
    try:
        write(tmp)
        if durable:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        fsync_dir(target.parent)
    return target


def write_bytes_atomically(target: Path | str, data: bytes, *, durable: bool = True) -> None:
    """Replace ``target`` with ``data``; ``durable`` also flushes it to disk before the rename."""
    write_atomically_with(target, lambda tmp: tmp.write_bytes(data), durable=durable)


def write_text_atomically(target: Path | str, text: str, *, durable: bool = True) -> None:
    """Replace ``target`` with ``text`` (UTF-8), as :func:`write_bytes_atomically`."""
    write_bytes_atomically(target, text.encode("utf-8"), durable=durable)


def copy_atomically(source: Path | str, target: Path | str) -> None:
    """Copy ``source`` to ``target`` through a sibling temporary file and a rename."""
    write_atomically_with(target, lambda tmp: shutil.copyfile(source, tmp), durable=False, suffix=".copying")


def fsync_dir(path: Path | str) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
