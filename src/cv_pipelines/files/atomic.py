"""Writes that a crash can interrupt without leaving a half-written file.

Every writer of the project goes through a sibling temporary file and an atomic
rename, so a reader sees the old file or the new one, never part of one.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


def write_bytes_atomically(target: Path | str, data: bytes, *, durable: bool = True) -> None:
    """Replace ``target`` with ``data``; ``durable`` also flushes it to disk before the rename."""
    target = Path(target)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomically(target: Path | str, text: str, *, durable: bool = True) -> None:
    write_bytes_atomically(target, text.encode("utf-8"), durable=durable)


def copy_atomically(source: Path | str, target: Path | str) -> None:
    """Copy ``source`` to ``target`` through a sibling temporary file and a rename."""
    target = Path(target)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.copying")
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
