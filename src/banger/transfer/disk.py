"""The host's side of a VM's payload disk: claim it, fill it or read it, empty it again.

File work runs in threads; a cancelled copy stops its thread and waits for it before the disk
is emptied and released, so no late write lands in a disk the next copy (or the guest) reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import tarfile
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeVar

from banger.errors import OperationFailed
from banger.textsafe import one_line

T = TypeVar("T")
Progress = Callable[[int, int | None], None]
CHUNK = 1 << 20
HEADROOM = 0.9  # of the disk, for tar's headers and records
_busy: set[Path] = set()
# copy_file_range cannot cross filesystems (or some file systems at all): then plain copies.
_NO_RANGE = (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)


class TooBig(Exception):
    """The tar would not fit on the payload disk: the copy takes the stream instead."""


class Stopped(Exception):
    """The copy was cancelled: its thread ends here."""


@dataclass
class Disk:
    file: Path
    size: int  # fixed while the VM runs: the guest sees no more
    stop: threading.Event = field(default_factory=threading.Event)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """fn(*args) in a thread; on cancellation the thread is told to stop and waited for."""
        job = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            self.stop.set()
            with contextlib.suppress(BaseException):
                await job
            raise

    def check(self) -> None:
        if self.stop.is_set():
            raise Stopped


@contextlib.asynccontextmanager
async def claim(file: Path | None, need: int | None) -> AsyncIterator[Disk | None]:
    """The payload disk when it is free and `need` bytes fit; None means: use the stream."""
    size = file.stat().st_size if file is not None else 0
    if file is None or file in _busy or need is None or need > size * HEADROOM:
        yield None
        return
    _busy.add(file)
    disk = Disk(file, size)
    try:
        yield disk
    finally:
        disk.stop.set()
        # Emptying a fragmented file can take seconds: off the loop, and the disk stays
        # claimed until it is done, even if this copy is cancelled meanwhile.
        emptied = asyncio.ensure_future(asyncio.to_thread(_empty, disk))
        emptied.add_done_callback(lambda _: _busy.discard(file))
        await asyncio.shield(emptied)


def _empty(disk: Disk) -> None:
    """Give the host's blocks back: the disk keeps its size and reads as zeros."""
    with open(disk.file, "r+b") as f:
        f.truncate(0)
        f.truncate(disk.size)


def _copy(disk: Disk, src: int, dst: int, count: int, progress: Progress | None) -> int:
    """Up to count bytes from src to dst at their current offsets; returns how many."""
    done, ranged = 0, True
    while done < count:
        disk.check()
        want = min(CHUNK * 8, count - done)
        if ranged:
            try:
                n = os.copy_file_range(src, dst, want)
            except OSError as exc:
                if exc.errno not in _NO_RANGE:
                    raise
                ranged = False
                continue
        else:
            data = os.read(src, min(want, CHUNK))
            n = len(data)
            view = memoryview(data)
            while view:
                view = view[os.write(dst, view):]
        if n == 0:
            break  # the source ended early (a file that shrank meanwhile)
        done += n
        if progress is not None:
            progress(done, count)
    return done


class _Bounded:
    """The payload file as tarfile's output: counted, and never past the disk's end."""

    def __init__(self, f: BinaryIO, disk: Disk, progress: Progress, total: int) -> None:
        self.f, self.disk, self.progress, self.total, self.n = f, disk, progress, total, 0

    def write(self, data: bytes) -> int:
        self.disk.check()
        if self.n + len(data) > self.disk.size:
            raise TooBig
        self.n += len(data)
        self.progress(self.n, self.total)
        return self.f.write(data)


def write_tar(disk: Disk, source: Path, arcname: str, progress: Progress, total: int) -> int:
    """A tar of source at the start of the payload disk; returns its length."""
    with open(disk.file, "r+b") as f:
        out = _Bounded(f, disk, progress, total)
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                          bufsize=CHUNK) as archive:
            archive.add(str(source), arcname=arcname)  # links stored, never followed
        return out.n


def write_file(disk: Disk, source: Path, progress: Progress) -> tuple[int, os.stat_result]:
    """A regular file's bytes at the start of the payload disk: (how many, its stat).
    Opened without following a link, so what was checked is what is sent."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise OperationFailed(f"cannot read {one_line(str(source), 300)} on the host: "
                              f"{exc.strerror}") from None
    with os.fdopen(fd, "rb") as src, open(disk.file, "r+b") as out:
        st = os.fstat(src.fileno())
        if st.st_size > disk.size:
            raise TooBig
        return _copy(disk, src.fileno(), out.fileno(), st.st_size, progress), st


def copy_out(disk: Disk, length: int, dest: Path, mode: int) -> None:
    """The payload disk's first `length` bytes as a new file at dest (never through a link);
    no setuid, setgid or sticky bit and no write for others: the mode comes from the guest."""
    tmp = dest.with_name(f".banger-cp-{os.getpid()}-{threading.get_ident()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise OperationFailed(f"cannot write in {one_line(str(dest.parent), 300)} on the host: "
                              f"{exc.strerror}") from None
    try:
        with open(disk.file, "rb") as src, os.fdopen(fd, "wb") as out:
            _copy(disk, src.fileno(), out.fileno(), min(length, disk.size), None)
            os.fchmod(out.fileno(), mode & 0o755)
        disk.check()
        os.replace(tmp, dest)  # a link at dest is replaced, never written through
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OperationFailed(f"cannot write {one_line(str(dest), 300)} on the host: "
                              f"{exc.strerror}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


async def read_chunks(disk: Disk) -> AsyncIterator[bytes]:
    """The payload disk from its start, until its end or until the consumer stops."""
    with open(disk.file, "rb") as f:
        while chunk := await asyncio.to_thread(f.read, CHUNK):
            yield chunk


__all__ = ["Disk", "Stopped", "TooBig", "claim", "copy_out", "read_chunks", "write_file",
           "write_tar"]
