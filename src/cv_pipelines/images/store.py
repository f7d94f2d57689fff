"""The content-addressed, append-only image store.

An image's id is the SHA-256 of its bytes; it lives at
``<root>/<id[0:2]>/<id[2:4]>/<id>.<ext>``, so the same pixels are stored once whatever
their name or source, and an old data set version never needs old copies of images.
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

from cv_pipelines.files.atomic import copy_atomically

_HASH_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    """The image id of ``data``: the hex SHA-256 of its bytes."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """The image id of the file at ``path``, read in 1 MiB chunks (constant memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def link_or_copy(source: Path | str, target: Path | str) -> None:
    """Hard-link ``source`` at ``target`` (no data copied), or copy across file systems.

    ``target`` must not exist and its folder must. A hard link shares the inode, so the
    store keeps the bytes when the source is later removed from the drop zone, and an
    export costs no copy of its images.
    """
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        copy_atomically(source, target)
