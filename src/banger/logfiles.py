"""Log files that others append to (a VM's serial console, the daemon log): bounded reads by
seeking, and copy-truncate rotation that keeps them small while writers hold them open.

Writers must open with O_APPEND (QEMU's `append=on`, the shell's `>>`): after a truncation
their next write lands at the new end instead of leaving a hole as large as the old file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from banger.durable import write_all
from banger.textsafe import one_line

TAIL_BYTES = 16384
READ_LIMIT = 1 << 20
COPY_CHUNK = 1 << 20


def rotated(path: Path) -> Path:
    """Where the newest part of a rotated file goes: console.log -> console.log.1."""
    return path.with_name(path.name + ".1")


def tail_bytes(path: Path, limit: int = TAIL_BYTES) -> bytes:
    """The last `limit` bytes of path (b"" when it is missing), read by seeking."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(size - limit, 0))
            return f.read(limit)
    except OSError:
        return b""


def tail_lines(path: Path, lines: int, limit: int = TAIL_BYTES) -> list[str]:
    """The last non-blank lines within the last `limit` bytes, stripped (not yet cleaned)."""
    text = tail_bytes(path, limit).decode(errors="replace")
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    return kept[-lines:] if lines > 0 else []


def tail_line(path: Path, lines: int, limit: int = TAIL_BYTES) -> str:
    """The last lines as one clean line for an error message ("" when there are none)."""
    return one_line(" | ".join(tail_lines(path, lines, limit)), 1000)


def read_from(path: Path, offset: int, limit: int = READ_LIMIT) -> tuple[bytes, int]:
    """Up to `limit` bytes from offset and the offset after them; a file now shorter than
    offset was truncated (rotated), so reading restarts at 0."""
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size < offset:
                offset = 0
            f.seek(offset)
            data = f.read(limit)
    except OSError:
        return b"", offset
    return data, offset + len(data)


def rotate(path: Path, cap: int) -> bool:
    """When path is over cap bytes: its newest cap bytes go to path.1 and path is truncated.

    Bytes a writer appends between the copy and the truncation are lost; the copy re-checks
    the size once to keep that window to a single write.
    """
    try:
        size = path.stat().st_size
    except OSError:
        return False
    if size <= cap:
        return False
    target = rotated(path)
    tmp = target.with_name(target.name + ".tmp")
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        _copy_range(src.fileno(), dst.fileno(), max(size - cap, 0), size)
        _copy_range(src.fileno(), dst.fileno(), size, os.fstat(src.fileno()).st_size)
        os.truncate(path, 0)
    tmp.replace(target)
    return True


def _copy_range(src: int, dst: int, start: int, end: int) -> None:
    """Copy src[start:end] to dst in chunks (less if src is shorter)."""
    while start < end:
        chunk = os.pread(src, min(COPY_CHUNK, end - start), start)
        if not chunk:
            return
        write_all(dst, chunk)
        start += len(chunk)


@dataclass
class Follower:
    """Reads what is appended to path, across rotations (`vm logs -f`, `daemon logs -f`)."""

    path: Path
    offset: int = 0
    generation: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        self.generation = self._generation()

    def read(self, limit: int = READ_LIMIT) -> bytes:
        generation = self._generation()
        if generation != self.generation:  # rotated since the last read: the live file restarted
            self.generation, self.offset = generation, 0
        data, self.offset = read_from(self.path, self.offset, limit)
        return data

    def _generation(self) -> tuple[int, int] | None:
        try:
            st = rotated(self.path).stat()
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns
