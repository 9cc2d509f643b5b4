"""Exact-members mode: only regular files with names the caller lists, each under its own cap."""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from banger.archive.limits import ArchiveError, Limits, refuse
from banger.archive.names import check_component, split_name
from banger.archive.stream import MAX_HEADER_CHAIN, TarReader, read_tar
from banger.archive.write import DIR_FLAGS, Budget, copy_exact, new_file

TAR_OVERHEAD = 20 * 1024  # end-of-archive blocks and record padding


@dataclass
class Extracted:
    """Where exact-mode files landed: `root` is a private (0700) directory the caller removes."""

    root: Path
    files: dict[str, Path] = field(default_factory=dict)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def exact_limits(allowed: Mapping[str, int], header_bytes: int = 64 * 1024) -> Limits:
    """Limits that follow from the allowed members: nothing bigger, nothing more."""
    members = len(allowed) + 2  # + the root entry and one top-level directory
    total = max(sum(allowed.values()), 1)
    headers = members * (MAX_HEADER_CHAIN + 1) * (header_bytes + 1024)
    return Limits(members=members, member_bytes=max(max(allowed.values(), default=1), 1),
                  total_bytes=total, stream_bytes=total + headers + TAR_OVERHEAD,
                  header_bytes=header_bytes)


def extract_exact(
    src: IO[bytes],
    allowed: Mapping[str, int],
    *,
    into: Path,
    origin: str,
    required: Collection[str] = (),
    top_dir: bool = False,
    decompress: bool = True,
    limits: Limits | None = None,
) -> Extracted:
    """Unpack exactly the allowed regular files (name -> max bytes) of a tar stream.

    Anything else fails with one ArchiveError line: another name, a link, a directory (but the
    root entry and, with `top_dir`, one top-level directory shared by every member), a
    device, a duplicate, a file over its cap, a name in `required` missing. Files are written
    with O_CREAT|O_EXCL|O_NOFOLLOW into a new private directory made by mkdtemp under `into`;
    on failure it is removed. `src` may be gzip/zstd/xz compressed (detected) or plain.

    The workspace export, read straight from the guest's tar stream:

        got = extract_exact(stream, {"commits.bundle": 1 << 30, "changes.diff": 256 << 20,
                                     "base": 64, "head": 64, "summary": 64 << 10},
                            into=scratch_dir, origin=f"workspace export of {vm}",
                            required=("base", "head"), top_dir=True)
        try:
            diff = got.files.get("changes.diff")   # a Path inside got.root, or None
            ...
        finally:
            got.remove()
    """
    for name in allowed:
        check_component(name, name, "extract_exact")  # a caller bug, not hostile input
    root = Path(tempfile.mkdtemp(prefix=".extract-", dir=into))
    got = Extracted(root)
    try:
        _ExactWriter(got, allowed, origin, top_dir).run(
            src, limits or exact_limits(allowed), decompress)
        missing = [n for n in required if n not in got.files]
        if missing:
            raise ArchiveError(f"{origin} lacks {', '.join(sorted(missing))}; "
                               "it is incomplete or not the expected archive")
    except BaseException:
        got.remove()
        raise
    return got


class _ExactWriter:
    def __init__(self, got: Extracted, allowed: Mapping[str, int], origin: str,
                 top_dir: bool) -> None:
        self.got, self.allowed, self.origin, self.top_dir = got, allowed, origin, top_dir
        self.top: str | None = None

    def run(self, src: IO[bytes], limits: Limits, decompress: bool) -> None:
        budget = Budget(limits, self.origin)
        dir_fd = os.open(self.got.root, DIR_FLAGS)
        try:
            with read_tar(src, limits, self.origin, decompress=decompress) as reader:
                for m in reader:
                    name = self.name_of(m)
                    if name is not None:
                        self.write(reader, m, name, dir_fd, budget)
        finally:
            os.close(dir_fd)

    def name_of(self, m: tarfile.TarInfo) -> str | None:
        """The allowed name this member is, None for an accepted directory entry."""
        parts = split_name(m.name, self.origin)
        if self.top_dir and len(parts) in (1, 2) and (m.isdir() or len(parts) == 2):
            if self.top is None:
                self.top = parts[0]
            if parts[0] != self.top:
                raise refuse(self.origin, m.name, f"a second top-level directory besides "
                             f"{self.top!r}")
            parts = parts[1:]
        if not parts and m.isdir():
            return None
        if not m.isreg():
            raise refuse(self.origin, m.name, f"{_kind(m)}; only regular files are allowed")
        name = "/".join(parts)
        if name not in self.allowed:
            raise refuse(self.origin, m.name, "unexpected member; expected only "
                         + ", ".join(sorted(self.allowed)))
        if name in self.got.files:
            raise refuse(self.origin, m.name, "appears twice")
        return name

    def write(self, reader: TarReader, m: tarfile.TarInfo, name: str, dir_fd: int,
              budget: Budget) -> None:
        if m.size > self.allowed[name]:
            raise refuse(self.origin, m.name, f"{m.size} bytes, over its cap of "
                         f"{self.allowed[name]}")
        budget.take(m.name, m.size)
        fd = new_file(dir_fd, name)
        try:
            copy_exact(reader.data(m), fd, m.size, self.origin, m.name)
        finally:
            os.close(fd)
        self.got.files[name] = self.got.root / name


def _kind(m: tarfile.TarInfo) -> str:
    if m.issym():
        return "a symlink"
    if m.islnk():
        return "a hard link"
    if m.isdir():
        return "a directory"
    if m.ischr() or m.isblk() or m.isfifo():
        return "a device or fifo"
    return "not a regular file"


__all__ = ["Extracted", "exact_limits", "extract_exact"]
