"""Reading files from folders a user fills, without following links or blocking on pipes.

A drop zone can hold anything a user (or a tool) put there: a symbolic link to a file
elsewhere, a link loop, a named pipe (FIFO) that blocks whoever opens it until a writer
comes, a socket or a device node. Only regular files are read: every other entry is
told apart with ``lstat`` before anything is opened, and the open itself refuses links
(``O_NOFOLLOW``) and never waits (``O_NONBLOCK``), so an entry swapped for one of them
between the look and the open is still refused, in bounded time.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat

_HASH_CHUNK = 1 << 20
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)

#: What each kind of entry is called in a rejection reason.
_KIND_NAMES = {
    "symlink": "a symbolic link",
    "fifo": "a named pipe (FIFO)",
    "socket": "a socket",
    "char_device": "a character device",
    "block_device": "a block device",
    "directory": "a folder",
    "other": "a special file",
}


class NotRegularFileError(OSError):
    """The entry is not a regular file (``kind``: symlink, fifo, socket, char_device, ...)."""

    def __init__(self, path: str, kind: str, description: str) -> None:
        super().__init__(errno.EINVAL, description, path)
        self.kind = kind
        self.description = description

    def __str__(self) -> str:
        return self.description


def entry_kind(mode: int) -> str:
    """The kind of a directory entry from its ``lstat`` mode: ``file`` for a regular file."""
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        return "char_device"
    if stat.S_ISBLK(mode):
        return "block_device"
    if stat.S_ISDIR(mode):
        return "directory"
    return "other"


def _not_regular(path: str, kind: str) -> NotRegularFileError:
    description = f"{_KIND_NAMES.get(kind, _KIND_NAMES['other'])}, not a regular file"
    if kind == "symlink":
        try:
            target = os.readlink(path)  # the link's text: nothing it points to is touched
        except OSError:
            target = "?"
        description = f"a symbolic link (to {target!r}), not a regular file; symbolic links are never followed"
    return NotRegularFileError(path, kind, description)


def open_regular_file(path: str) -> int:
    """Open the regular file at ``path`` for reading and return its descriptor (the caller closes it).

    Raises:
        NotRegularFileError: ``path`` is a symbolic link, a FIFO, a socket, a device or
            anything else than a regular file; nothing it points to was opened.
        OSError: it cannot be read (missing, no permission).
    """
    kind = entry_kind(os.lstat(path).st_mode)
    if kind != "file":
        raise _not_regular(path, kind)  # a device or a pipe is never opened at all
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # replaced by a link since the lstat
            raise _not_regular(path, "symlink") from None
        raise
    kind = entry_kind(os.fstat(fd).st_mode)
    if kind != "file":  # replaced by a pipe or a device since the lstat: opened without waiting
        os.close(fd)
        raise _not_regular(path, kind)
    return fd


def read_regular_file(path: str) -> bytes:
    """The bytes of the regular file at ``path`` (see :func:`open_regular_file` for what is refused)."""
    fd = open_regular_file(path)
    with open(fd, "rb", closefd=True) as handle:
        return handle.read()


def sha256_regular_file(path: str) -> str:
    """The hex SHA-256 of the regular file at ``path``, read in 1 MiB chunks (constant memory)."""
    digest = hashlib.sha256()
    with open(open_regular_file(path), "rb", closefd=True) as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
