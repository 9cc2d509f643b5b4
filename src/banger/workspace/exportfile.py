"""The workspace export: read strictly (from the guest's stream or a file), written by the host.

A guest is hostile, so its export is never extracted generically: the one safe extractor's
exact-members mode takes only the known regular files, each under its cap, into a private
directory; `base`/`head` must be full hex object ids and `summary` two bounded decimals. The
host then writes the export file itself from those parts, adding `workspace.json` (the VM's
workspace record as shipped) so that `apply --file` knows the recorded branch too.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import tarfile
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Annotated, TypeVar

import msgspec

from banger.archive import GIB, KIB, ArchiveError, Extracted, exact_limits, extract_exact
from banger.archive.limits import shown
from banger.durable import NEW_FILE, write_all
from banger.errors import Conflict

TOP = "export"
BUNDLE, DIFF, BASE, HEAD, SUMMARY = "commits.bundle", "changes.diff", "base", "head", "summary"
RECORD = "workspace.json"
GUEST_MEMBERS = {BUNDLE: 2 * GIB, DIFF: 2 * GIB, BASE: 128, HEAD: 128, SUMMARY: 64}
# "branch" is in exports written by earlier versions; it is accepted there and never read.
FILE_MEMBERS = {**GUEST_MEMBERS, RECORD: 64 * KIB, "branch": 1 * KIB}
_OBJECT_ID = re.compile(rb"([0-9a-f]{40}|[0-9a-f]{64})\n?")
_SUMMARY = re.compile(rb"([0-9]{1,9}) ([0-9]{1,9})\n?")
T = TypeVar("T")

Text = Annotated[str, msgspec.Meta(max_length=4096)]


class WorkspaceRecord(msgspec.Struct, frozen=True):
    """What apply reads of the ship-time record (the rest of the record is carried along)."""

    host_repo: Text = ""
    branch: Annotated[str, msgspec.Meta(max_length=255)] = ""
    base: Annotated[str, msgspec.Meta(max_length=64)] = ""


@dataclass
class Export:
    """A checked export in a private directory (`remove()` it when done)."""

    parts: Extracted
    base: str
    head: str
    commits: int
    files: int
    record: WorkspaceRecord | None

    @property
    def bundle(self) -> Path:
        return self.parts.root / BUNDLE

    @property
    def diff(self) -> Path:
        return self.parts.root / DIFF

    def remove(self) -> None:
        self.parts.remove()


def _invalid(origin: str, what: str) -> ArchiveError:
    return ArchiveError(f"{origin}: {what}; it is not a workspace export banger made")


def _object_id(data: bytes, name: str, origin: str) -> str:
    if (m := _OBJECT_ID.fullmatch(data)) is None:
        raise _invalid(origin, f"{name} is not a full hex object id ({shown(data.decode('latin-1'))})")
    return m.group(1).decode()


def _record(data: bytes | None, origin: str) -> WorkspaceRecord | None:
    if data is None:
        return None
    try:
        return msgspec.json.decode(data, type=WorkspaceRecord)
    except msgspec.DecodeError as exc:
        raise _invalid(origin, f"{RECORD} is not a workspace record ({shown(str(exc))})") from None


def parse(parts: Extracted, origin: str) -> Export:
    """An Export from extracted parts; the parts are removed when a value is invalid."""
    try:
        def read(name: str) -> bytes | None:
            path = parts.files.get(name)
            return path.read_bytes() if path is not None else None

        summary = _SUMMARY.fullmatch(read(SUMMARY) or b"")
        if summary is None:
            raise _invalid(origin, "summary is not two decimal counts")
        return Export(parts, _object_id(read(BASE) or b"", BASE, origin),
                      _object_id(read(HEAD) or b"", HEAD, origin), int(summary.group(1)),
                      int(summary.group(2)), _record(read(RECORD), origin))
    except BaseException:
        parts.remove()
        raise


def _extract(src: IO[bytes], allowed: dict[str, int], origin: str) -> Extracted:
    return extract_exact(src, allowed, into=Path(tempfile.gettempdir()), origin=origin,
                         required=tuple(GUEST_MEMBERS), top_dir=True, decompress=False)


def read_file(path: Path) -> Export:
    """The export file at path, checked member by member into a private directory."""
    with open(path, "rb") as src:
        return parse(_extract(src, FILE_MEMBERS, str(path)), str(path))


async def receive(chunks: AsyncIterator[bytes], origin: str) -> Export:
    """The guest's export tar stream, checked while it arrives (never spooled unchecked)."""
    cap = exact_limits(GUEST_MEMBERS).stream_bytes
    parts = await _through_pipe(chunks, lambda src: _extract(src, GUEST_MEMBERS, origin),
                                cap, origin)
    return parse(parts, origin)


async def _through_pipe(chunks: AsyncIterator[bytes], consume: Callable[[IO[bytes]], T],
                        cap: int, origin: str) -> T:
    """Run a blocking consume(reader) in a thread, fed with chunks through a pipe.

    Past `cap` bytes the stream is refused; the rest of the stream after consume is done is
    drained (so the sender finishes cleanly) but never read by anyone.
    """
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)

    def work() -> T:
        with open(read_fd, "rb") as reader:
            return consume(reader)

    job = asyncio.ensure_future(asyncio.to_thread(work))
    job.add_done_callback(lambda f: f.cancelled() or f.exception())  # never "unretrieved"
    received = 0
    try:
        async for chunk in chunks:
            received += len(chunk)
            if received > cap:
                raise ArchiveError(f"{origin}: more than {cap} bytes; refusing it")
            if job.done():
                if job.exception() is not None:
                    break  # refused: stop receiving, the error below says why
                continue  # read to its end: drain what the sender still has
            with contextlib.suppress(BrokenPipeError):  # the reader stopped; its result says why
                await asyncio.to_thread(write_all, write_fd, chunk)
    finally:
        os.close(write_fd)  # end of stream for the reader, also on errors and cancellation
    return await job


def write_file(export: Export, out: Path, record: bytes | None) -> None:
    """Write the export file at out from checked parts (plus the host's record, JSON).

    The temporary `.NAME.part` is created O_EXCL|O_NOFOLLOW, so nobody's file or link at that
    name is ever written through; the rename then replaces out itself, never a link target.
    """
    part = out.with_name(f".{out.name}.part")
    try:
        fd = os.open(part, NEW_FILE, 0o600)
    except FileExistsError:
        raise Conflict(f"{part} already exists (a crashed export, or someone else's file); "
                       "remove it and export again") from None
    try:
        with os.fdopen(fd, "wb") as dst, tarfile.open(fileobj=dst, mode="w",
                                                      format=tarfile.PAX_FORMAT) as tar:
            _add_dir(tar, TOP)
            for name in sorted(export.parts.files):
                with open(export.parts.files[name], "rb") as src:
                    _add_file(tar, f"{TOP}/{name}", os.fstat(src.fileno()).st_size, src)
            if record is not None:
                _add_file(tar, f"{TOP}/{RECORD}", len(record), io.BytesIO(record))
        os.replace(part, out)
    finally:
        part.unlink(missing_ok=True)


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o700
    tar.addfile(info)


def _add_file(tar: tarfile.TarFile, name: str, size: int, src: IO[bytes]) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = size, 0o600
    tar.addfile(info, src)
