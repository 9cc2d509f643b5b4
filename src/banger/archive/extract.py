"""Full extraction: every accepted member placed under the destination through a `Tree`.

Files are created with O_CREAT|O_EXCL|O_NOFOLLOW (an existing entry is removed first, never
written through), hard links must name a file already inside the destination, and the tar
header's owner, mode and mtime are recorded per path (`Meta`) for a later ext4 step.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from banger.archive.limits import Limits
from banger.archive.names import split_name
from banger.archive.stream import TarReader, read_tar
from banger.archive.tree import Real, Tree
from banger.archive.write import DIR_FLAGS, Budget, copy_exact, new_file
from banger.textsafe import one_line

# Called with the normalised member name ("usr/bin/x"): the name to write it as, or None to skip.
Select = Callable[[str, tarfile.TarInfo], str | None]
Specials = Literal["refuse", "skip"]


@dataclass(frozen=True)
class Meta:
    """What the tar header says about a path: full st_mode, owner, mtime; ino ties it to a file."""

    uid: int
    gid: int
    mode: int
    mtime: int
    ino: int


class Extractor:
    """Unpacks tar streams into `dest`; `apply()` once per archive (layers: oldest first).

    With `host_modes` the tree gets the headers' modes (setuid/setgid/sticky dropped,
    directories kept writable by us) and mtimes as it is written; without, files stay 0600 and
    directories 0700 and the caller applies `meta` later (the OCI flattener does).
    """

    def __init__(self, dest: Path, origin: str, limits: Limits | None = None, *,
                 links: bool = True, specials: Specials = "refuse",
                 follow_in_root: bool = False, host_modes: bool = True) -> None:
        self.limits = limits or Limits()
        self.tree = Tree(dest, origin, follow_in_root=follow_in_root)
        self.budget = Budget(self.limits, origin)
        self.links, self.specials, self.host_modes = links, specials, host_modes
        self.meta: dict[str, Meta] = {}
        self.written: list[str] = []
        self.notes: list[str] = []

    def close(self) -> None:
        self.tree.close()

    def __enter__(self) -> Extractor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def origin(self) -> str:
        return self.tree.origin

    def apply(self, src: IO[bytes], what: str | None = None, *, select: Select | None = None,
              decompress: bool = True, progress: Callable[[], None] | None = None) -> None:
        """Extract one tar stream (compressed or not); `what` names it in errors."""
        if what is not None:
            self.tree.origin = self.budget.origin = what
        self.start()
        try:
            with read_tar(src, self.limits, self.origin, decompress=decompress) as reader:
                for m in reader:
                    self.tree.close_retired()
                    self.tree.member = m.name
                    self.member(reader, m, select)
                    if progress:
                        progress()
        finally:
            self.tree.forget()
            self.tree.close_retired()

    def start(self) -> None:
        """Before each archive (the flattener resets its per-layer state here)."""
        self.tree.forget()

    def member(self, reader: TarReader, m: tarfile.TarInfo, select: Select | None) -> None:
        parts = split_name(m.name, self.origin)
        if select is not None:
            renamed = select("/".join(parts), m)
            if renamed is None:
                return
            parts = split_name(renamed, self.origin)
        if not parts:
            if m.isdir():
                self.record("", m, os.fstat(self.tree.root_fd).st_ino)
            return
        self.place(reader, m, parts)

    def place(self, reader: TarReader, m: tarfile.TarInfo, parts: list[str]) -> None:
        if m.ischr() or m.isblk() or m.isfifo() or not (m.isdir() or m.issym() or m.islnk()
                                                         or m.isreg()):
            if self.specials == "refuse":
                raise self.tree.refuse("device, fifo or other special file")
            kind = "device/fifo" if m.isdev() else f"entry of tar type {m.type!r}"
            self.notes.append(f"skipped {kind} {one_line('/'.join(parts), 120)}")
            return
        if (m.issym() or m.islnk()) and not self.links:
            raise self.tree.refuse("links are not allowed in this archive")
        placed = self.tree.parent(parts)
        assert placed is not None  # create=True never returns None
        real, fd = placed
        rel = "/".join([*real, parts[-1]])
        self.placing(real, rel)
        if m.isdir():
            self.make_dir(fd, parts[-1], rel, m)
        elif m.issym():
            self.symlink(fd, parts[-1], rel, real, m)
        elif m.islnk():
            self.hardlink(fd, parts[-1], rel, m)
        else:
            self.file(reader, fd, parts[-1], rel, m)
        self.written.append(rel)

    def placing(self, real: Real, rel: str) -> None:
        """Called before an entry is made at `rel` (in directory `real`)."""

    # ---- entries ----------------------------------------------------------------------

    def record(self, rel: str, m: tarfile.TarInfo, ino: int) -> None:
        kind = stat.S_IFDIR if m.isdir() else stat.S_IFLNK if m.issym() else stat.S_IFREG
        self.meta[rel] = Meta(m.uid, m.gid, kind | (m.mode & 0o7777), int(m.mtime), ino)

    def remove(self, fd: int, name: str, rel: str) -> None:
        if self.tree.remove(fd, name):
            prefix = rel + "/"
            for key in [k for k in self.meta if k.startswith(prefix)]:
                del self.meta[key]
        self.meta.pop(rel, None)

    def clear(self, fd: int, name: str, rel: str, keep_dir: bool) -> bool:
        """Make room for a new entry; True when an existing directory is kept."""
        try:
            st = os.lstat(name, dir_fd=fd)
        except FileNotFoundError:
            return False
        if keep_dir and stat.S_ISDIR(st.st_mode):
            return True
        self.remove(fd, name, rel)
        return False

    def make_dir(self, fd: int, name: str, rel: str, m: tarfile.TarInfo) -> None:
        if not self.clear(fd, name, rel, keep_dir=True):
            os.mkdir(name, 0o700, dir_fd=fd)
        dfd = os.open(name, DIR_FLAGS, dir_fd=fd)
        try:
            if self.host_modes:
                os.fchmod(dfd, (m.mode & 0o777) | 0o700)  # keep it writable so we can fill it
            self.record(rel, m, os.fstat(dfd).st_ino)
        finally:
            os.close(dfd)

    def symlink(self, fd: int, name: str, rel: str, real: Real, m: tarfile.TarInfo) -> None:
        self.tree.symlink_target_ok(m.linkname, real)
        self.clear(fd, name, rel, keep_dir=False)
        self.tree.forget()
        os.symlink(m.linkname, name, dir_fd=fd)
        self.record(rel, m, os.lstat(name, dir_fd=fd).st_ino)

    def hardlink(self, fd: int, name: str, rel: str, m: tarfile.TarInfo) -> None:
        target = split_name(m.linkname, self.origin)
        src = self.tree.parent(target, create=False) if target else None
        src_st = None if src is None else self.tree.lstat([*src[0], target[-1]])
        if src is None or src_st is None or stat.S_ISDIR(src_st.st_mode):
            raise self.tree.refuse(f"hard link to {m.linkname[:120]!r}, which is not a file "
                                   "inside the destination")
        src_rel = "/".join([*src[0], target[-1]])
        if src_rel == rel:
            return
        self.clear(fd, name, rel, keep_dir=False)
        os.link(target[-1], name, src_dir_fd=src[1], dst_dir_fd=fd, follow_symlinks=False)
        if src_rel in self.meta:
            self.meta[rel] = self.meta[src_rel]
        else:
            self.record(rel, m, src_st.st_ino)

    def file(self, reader: TarReader, fd: int, name: str, rel: str, m: tarfile.TarInfo) -> None:
        self.budget.take(m.name, m.size)
        self.clear(fd, name, rel, keep_dir=False)
        out = new_file(fd, name)
        try:
            copy_exact(reader.data(m), out, m.size, self.origin, m.name)
            if self.host_modes:
                os.fchmod(out, m.mode & 0o777)  # setuid/setgid/sticky dropped
                os.utime(out, (m.mtime, m.mtime))
            self.record(rel, m, os.fstat(out).st_ino)
        finally:
            os.close(out)


def extract(src: IO[bytes], dest: Path, *, origin: str, select: Select | None = None,
            limits: Limits | None = None, links: bool = True,
            decompress: bool = True) -> Extractor:
    """Extract one tar stream into `dest` (made if missing); returns the closed extractor
    (its `written` names and per-path `meta`)."""
    dest.mkdir(parents=True, exist_ok=True)
    with Extractor(dest, origin, limits, links=links) as ex:
        ex.apply(src, select=select, decompress=decompress)
    return ex


__all__ = ["Extractor", "Meta", "Select", "extract"]
