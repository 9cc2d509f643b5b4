"""Make finished files survive a host crash before anything points at them, and create
staging outputs that nobody else can have planted."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a directory: so a rename into it is durable)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # a user may link images/ to another disk
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree_top(directory: Path) -> None:
    """fsync every regular file directly in `directory`, then the directory itself."""
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                fsync_path(Path(entry.path))
    fsync_path(directory)


def write_all(fd: int, data: bytes) -> None:
    """Write all of data to fd (os.write may take only part of it)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def create_fresh(path: Path, mode: int = 0o644) -> int:
    """A new file at a predictable path: a stale entry (even a planted symlink) is removed,
    then the file is created with O_EXCL|O_NOFOLLOW, so nothing is written through a link."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISDIR(os.lstat(path).st_mode):
            raise IsADirectoryError(f"{path} is a directory")
        os.unlink(path)
    return os.open(path, NEW_FILE, mode)


__all__ = ["create_fresh", "fsync_path", "fsync_tree_top"]
