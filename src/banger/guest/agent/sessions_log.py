"""A session's output on disk: two rotating segment files, each at most cap/2 bytes.

Stdlib-only, Python >= 3.7, part of the agent package shipped into guests. Offsets are absolute
(bytes the session ever wrote), so a reader that comes back after a disconnect continues exactly
where it stopped; when the writer has moved on past a segment, the oldest bytes are dropped and
the reader skips to the oldest byte still kept. A segment file is named `log.<start offset>`.
"""

from __future__ import annotations

import os
import threading

READ_CHUNK = 64 * 1024
MIN_CAP = 4096
MAX_CAP = 1024 * 1024 * 1024
DEFAULT_CAP = 8 * 1024 * 1024
PREFIX = "log."


def segments(directory: str) -> list[tuple[int, int, str]]:
    """(start, size, path) of each kept segment, oldest first."""
    found = []
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    for name in names:
        digits = name[len(PREFIX):]
        if not name.startswith(PREFIX) or not digits.isdigit() or len(digits) > 20:
            continue
        path = os.path.join(directory, name)
        try:
            size = os.lstat(path).st_size
        except OSError:
            continue  # rotated away meanwhile
        found.append((int(digits), size, path))
    found.sort()
    return found


def bounds(directory: str) -> tuple[int, int]:
    """(oldest kept offset, end offset)."""
    segs = segments(directory)
    if not segs:
        return 0, 0
    return segs[0][0], segs[-1][0] + segs[-1][1]


def read_at(directory: str, offset: int, limit: int = READ_CHUNK) -> tuple[int, bytes]:
    """Up to limit bytes from offset; the offset moves up to the oldest kept byte if it was
    dropped. Returns (the offset the data starts at, data); b"" at the end."""
    for _ in range(8):  # a segment may be rotated away between listing and opening it
        segs = segments(directory)
        if not segs:
            return offset, b""
        offset = max(offset, segs[0][0])
        for start, size, path in segs:
            if start <= offset < start + size:
                try:
                    with open(path, "rb") as f:
                        f.seek(offset - start)
                        return offset, f.read(min(limit, start + size - offset))
                except FileNotFoundError:
                    break
        else:
            return offset, b""
    return offset, b""


def read_span(directory: str, offset: int, length: int) -> bytes | None:
    """Exactly length bytes from offset (one read stops at a segment's end); None if some of
    them were dropped meanwhile."""
    parts = []
    while length > 0:
        at, data = read_at(directory, offset, length)
        if at != offset or not data:
            return None
        parts.append(data)
        offset += len(data)
        length -= len(data)
    return b"".join(parts)


def tail_offset(directory: str, lines: int) -> int:
    """The offset where the last `lines` lines of the kept log begin."""
    first, end = bounds(directory)
    if lines <= 0:
        return end
    pos = end
    # a final newline ends the last line; it does not start another one
    if end > first and read_at(directory, end - 1, 1)[1] == b"\n":
        pos = end - 1
    found = 0
    while pos > first:
        start = max(first, pos - READ_CHUNK)
        block = read_span(directory, start, pos - start)
        if block is None:  # rotated under us: what is left is the whole log
            return bounds(directory)[0]
        index = len(block)
        while True:
            index = block.rfind(b"\n", 0, index)
            if index < 0:
                break
            found += 1
            if found == lines:
                return start + index + 1
        pos = start
    return first


class LogWriter:
    """Appends output; keeps at most `cap` bytes in two segments of cap/2 each."""

    def __init__(self, directory: str, cap: int) -> None:
        self.directory = directory
        self.half = max(cap // 2, 1)
        self.lock = threading.Lock()
        segs = segments(directory)
        if segs:
            self.start, size = segs[-1][0], segs[-1][1]
        else:
            self.start, size = 0, 0
        self.end = self.start + size
        self.fd = self._open(self.start)

    def _open(self, start: int) -> int:
        path = os.path.join(self.directory, PREFIX + str(start))
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)

    def append(self, data: bytes) -> None:
        with self.lock:
            view = memoryview(data)
            while view:
                room = self.half - (self.end - self.start)
                if room <= 0:
                    self._rotate()
                    continue
                part = view[:room]
                written = os.write(self.fd, part)
                self.end += written
                view = view[written:]

    def _rotate(self) -> None:
        """Start a new segment at the end; only the one before it stays."""
        os.close(self.fd)
        previous = self.start
        self.start = self.end
        self.fd = self._open(self.start)
        for start, _, path in segments(self.directory):
            if start < previous:
                try:  # noqa: SIM105 (contextlib is one more import in the guest)
                    os.unlink(path)
                except OSError:
                    pass

    def close(self) -> None:
        with self.lock:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1
