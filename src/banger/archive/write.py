"""Writing one member's bytes: exactly its announced size, sparse over zero blocks."""

from __future__ import annotations

import os
from typing import IO

from banger.archive.limits import ArchiveError, Limits, shown
from banger.durable import NEW_FILE, write_all

CHUNK = 256 * 1024
_ZEROS = bytes(CHUNK)
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Budget:
    """The bytes an extraction may still write (Limits.total_bytes over all its members)."""

    def __init__(self, limits: Limits, origin: str) -> None:
        self.limits, self.origin, self.used = limits, origin, 0

    def take(self, name: str, size: int) -> None:
        """Count a member's bytes (TarReader already held it to Limits.member_bytes)."""
        if self.used + size > self.limits.total_bytes:
            raise ArchiveError(f"{self.origin}: unpacks to more than {self.limits.total_bytes} "
                               "bytes; refusing it (a decompression bomb or the wrong file)")
        self.used += size


def new_file(dir_fd: int, name: str, mode: int = 0o600) -> int:
    """Create `name` in `dir_fd`: never an existing file, never through a symlink."""
    return os.open(name, NEW_FILE, mode, dir_fd=dir_fd)


def copy_exact(src: IO[bytes], fd: int, size: int, origin: str, name: str) -> None:
    """Copy `size` bytes into fd, seeking over zero chunks so images stay sparse."""
    left = size
    while left:
        chunk = src.read(min(CHUNK, left))
        if not chunk:
            raise ArchiveError(f"{origin} is truncated inside {shown(name)}; re-download it")
        left -= len(chunk)
        if chunk == _ZEROS[: len(chunk)]:
            os.lseek(fd, len(chunk), os.SEEK_CUR)
        else:
            write_all(fd, chunk)
    os.ftruncate(fd, size)


__all__ = ["DIR_FLAGS", "Budget", "copy_exact", "new_file"]
