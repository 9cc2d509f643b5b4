"""Apply OCI layer tars oldest-first onto a directory, never writing outside it.

Every parent directory is resolved inside the root (symlinks followed chroot-style, never above
the root) and every write goes through directory fds with O_NOFOLLOW. Ownership, modes and
mtimes from the tar headers are recorded per path (`Meta`) so they can be put into the ext4 image
afterwards without privileges (see `finalize`).
"""

from __future__ import annotations

import gzip
import os
import shutil
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

import zstandard

from banger.errors import InvalidArgument
from banger.images.ext4 import Owner, TreeUsage

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
MAX_LINK_HOPS = 40
MAX_NAME_BYTES = 255  # ext4's limit for one path component
MAX_CACHED_FDS = 256
CHUNK = 1 << 20
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
BAD_CHARS = ('"', "\n", "\r", "\0")  # debugfs scripts cannot quote these


@dataclass(frozen=True)
class Meta:
    """What the tar header says about a path: full st_mode, owner, mtime; ino ties it to a file."""

    uid: int
    gid: int
    mode: int
    mtime: int
    ino: int


@dataclass
class Finalized:
    owners: list[Owner]  # fix-ups debugfs must make (what the host tree could not hold)
    usage: TreeUsage


class LayerError(InvalidArgument):
    """A layer holds something banger refuses to unpack (escapes, unencodable names)."""


def open_layer(f: IO[bytes]) -> IO[bytes]:
    """A decompressing reader for a gzip, zstd or uncompressed layer blob (by magic bytes)."""
    peek = f.read(4)
    f.seek(0)
    if peek[:2] == b"\x1f\x8b":
        return cast(IO[bytes], gzip.GzipFile(fileobj=f, mode="rb"))
    if peek == b"\x28\xb5\x2f\xfd":
        return cast(IO[bytes], zstandard.ZstdDecompressor().stream_reader(f, read_size=CHUNK))
    return f


def split_member(name: str, what: str) -> list[str]:
    """Components of a tar member path; LayerError for absolute, `..` or unencodable names."""
    if name.startswith("/"):
        raise LayerError(f"{what}: member {name!r} is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    for part in parts:
        if part == "..":
            raise LayerError(f"{what}: member {name!r} contains '..'")
        check_component(part, name, what)
    return parts


def check_component(part: str, name: str, what: str) -> None:
    try:
        size = len(part.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise LayerError(f"{what}: member {name!r} is not valid UTF-8 (debugfs cannot "
                         "write it)") from exc
    if size > MAX_NAME_BYTES or any(c in part for c in BAD_CHARS):
        raise LayerError(f"{what}: member {name!r} has a name ext4/debugfs cannot hold")


class Flattener:
    """Unpacks layers into `root`; call `apply()` per layer, oldest first, then `finalize()`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root_fd = os.open(root, DIR_FLAGS)
        self.meta: dict[str, Meta] = {}
        self.notes: list[str] = []
        self._resolved: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._fds: dict[tuple[str, ...], int] = {}
        self._retired: list[int] = []
        self._touched: set[str] = set()
        self._what = ""

    def close(self) -> None:
        self._forget()
        self._close_retired()
        os.close(self.root_fd)

    def __enter__(self) -> Flattener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- path resolution --------------------------------------------------------------

    def _forget(self) -> None:
        """Drop cached resolutions: the directory structure changed.

        The fds are closed only before the next member: the current one may still use them.
        """
        self._retired += self._fds.values()
        self._fds.clear()
        self._resolved.clear()

    def _close_retired(self) -> None:
        for fd in self._retired:
            os.close(fd)
        self._retired.clear()

    def _lstat(self, real: list[str] | tuple[str, ...]) -> os.stat_result | None:
        try:
            return os.lstat("/".join(real) or ".", dir_fd=self.root_fd)
        except FileNotFoundError:
            return None

    def _resolve_dir(self, parts: list[str], create: bool) -> tuple[str, ...] | None:
        """The real (symlink-free) path of directory `parts`, resolved inside the root."""
        key = tuple(parts)
        if key in self._resolved:
            return self._resolved[key]
        real: list[str] = []
        todo = list(parts)
        hops = 0
        while todo:
            part = todo.pop(0)
            if part == "..":
                if not real:
                    raise LayerError(f"{self._what}: a symlink in {'/'.join(parts)!r} leads "
                                     "outside the root")
                real.pop()
                continue
            st = self._lstat([*real, part])
            if st is None:
                if not create:
                    return None
                self._mkdir_implicit(real, part)
            elif stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > MAX_LINK_HOPS:
                    raise LayerError(f"{self._what}: too many symlinks under {'/'.join(parts)!r}")
                target = os.readlink("/".join([*real, part]), dir_fd=self.root_fd)
                if target.startswith("/"):
                    real = []
                todo = [p for p in target.split("/") if p not in ("", ".")] + todo
                continue
            elif not stat.S_ISDIR(st.st_mode):
                raise LayerError(f"{self._what}: {'/'.join([*real, part])!r} is not a directory "
                                 f"but the layer puts files under it")
            real.append(part)
            if create:
                self._touched.add("/".join(real))
        result = tuple(real)
        self._resolved[key] = result
        return result

    def _mkdir_implicit(self, real: list[str], part: str) -> None:
        os.mkdir(part, 0o700, dir_fd=self._dir_fd(tuple(real)))

    def _dir_fd(self, real: tuple[str, ...]) -> int:
        """An fd for a resolved directory, opened component by component with O_NOFOLLOW."""
        fd = self._fds.get(real)
        if fd is not None:
            return fd
        if not real:
            return self.root_fd
        parent = self._dir_fd(real[:-1])
        fd = os.open(real[-1], DIR_FLAGS, dir_fd=parent)
        if len(self._fds) >= MAX_CACHED_FDS:
            self._forget()
        self._fds[real] = fd
        return fd

    def _parent(self, parts: list[str], create: bool = True) -> tuple[tuple[str, ...], int] | None:
        real = self._resolve_dir(parts[:-1], create)
        if real is None:
            return None
        return real, self._dir_fd(real)

    # ---- removal ----------------------------------------------------------------------

    def _remove(self, fd: int, name: str, rel: str) -> None:
        """Remove one entry (a directory recursively), without following symlinks."""
        st = os.lstat(name, dir_fd=fd)
        if stat.S_ISDIR(st.st_mode):
            self._forget()
            shutil.rmtree(name, dir_fd=fd)
            prefix = rel + "/"
            for key in [k for k in self.meta if k.startswith(prefix)]:
                del self.meta[key]
        else:
            if stat.S_ISLNK(st.st_mode):
                self._forget()
            os.unlink(name, dir_fd=fd)
        self.meta.pop(rel, None)

    def _clear_existing(self, fd: int, name: str, rel: str, keep_dir: bool) -> bool:
        """Make room for a new entry; True when an existing directory is kept."""
        try:
            st = os.lstat(name, dir_fd=fd)
        except FileNotFoundError:
            return False
        if keep_dir and stat.S_ISDIR(st.st_mode):
            return True
        self._remove(fd, name, rel)
        return False

    def _opaque(self, real: tuple[str, ...]) -> None:
        """Hide everything in `real` that this layer did not put there."""
        fd = self._dir_fd(real)
        base = "/".join(real)
        for entry in list(os.scandir(fd)):
            rel = f"{base}/{entry.name}" if base else entry.name
            if rel not in self._touched:
                self._remove(fd, entry.name, rel)
            elif entry.is_dir(follow_symlinks=False):
                self._opaque((*real, entry.name))

    # ---- members ----------------------------------------------------------------------

    def apply(self, stream: IO[bytes], what: str,
              progress: Callable[[], None] | None = None) -> None:
        """Apply one (already decompressed) layer tar."""
        self._what = what
        self._touched = set()
        self._forget()
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    self._close_retired()
                    self._member(tar, member)
                    if progress:
                        progress()
        except tarfile.TarError as exc:
            raise LayerError(f"{what} is not a valid tar: {exc}") from exc
        finally:
            self._forget()
            self._close_retired()

    def _member(self, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        parts = split_member(m.name, self._what)
        if not parts:
            if m.isdir():
                self._record("", m, os.fstat(self.root_fd).st_ino)
            return
        name = parts[-1]
        if name == OPAQUE:
            real = self._resolve_dir(parts[:-1], create=False)
            if real is not None:
                self._opaque(real)
            return
        if name.startswith(WHITEOUT):
            self._whiteout(parts[:-1], name[len(WHITEOUT):])
            return
        if m.ischr() or m.isblk() or m.isfifo():
            self.notes.append(f"skipped device/fifo {m.name}")
            return
        parent = self._parent(parts)
        assert parent is not None
        real, fd = parent
        rel = "/".join([*real, name])
        self._touched.add(rel)
        if m.isdir():
            self._dir(fd, name, rel, m)
        elif m.issym():
            self._symlink(fd, name, rel, real, m)
        elif m.islnk():
            self._hardlink(fd, name, rel, m)
        elif m.isreg():
            self._file(tar, fd, name, rel, m)
        else:
            self.notes.append(f"skipped {m.name} (unsupported tar entry type {m.type!r})")

    def _whiteout(self, parent_parts: list[str], target: str) -> None:
        if not target:
            return
        check_component(target, target, self._what)
        real = self._resolve_dir(parent_parts, create=False)
        if real is None:
            return
        rel = "/".join([*real, target])
        if rel in self._touched:
            return  # whiteouts only hide lower layers
        fd = self._dir_fd(real)
        if self._lstat([*real, target]) is not None:
            self._remove(fd, target, rel)

    def _record(self, rel: str, m: tarfile.TarInfo, ino: int) -> None:
        kind = (stat.S_IFDIR if m.isdir() else stat.S_IFLNK if m.issym() else stat.S_IFREG)
        self.meta[rel] = Meta(m.uid, m.gid, kind | (m.mode & 0o7777), int(m.mtime), ino)

    def _dir(self, fd: int, name: str, rel: str, m: tarfile.TarInfo) -> None:
        if not self._clear_existing(fd, name, rel, keep_dir=True):
            os.mkdir(name, 0o700, dir_fd=fd)
        self._record(rel, m, os.lstat(name, dir_fd=fd).st_ino)

    def _symlink(self, fd: int, name: str, rel: str, real: tuple[str, ...],
                 m: tarfile.TarInfo) -> None:
        target = m.linkname
        if not target or "\0" in target:
            raise LayerError(f"{self._what}: symlink {m.name!r} has an empty or invalid target")
        if not target.startswith("/"):
            depth = len(real)
            for part in target.split("/"):
                depth += -1 if part == ".." else 0 if part in ("", ".") else 1
                if depth < 0:
                    raise LayerError(f"{self._what}: symlink {m.name!r} -> {target!r} "
                                     "escapes the root")
        self._clear_existing(fd, name, rel, keep_dir=False)
        self._forget()
        os.symlink(target, name, dir_fd=fd)
        self._record(rel, m, os.lstat(name, dir_fd=fd).st_ino)

    def _hardlink(self, fd: int, name: str, rel: str, m: tarfile.TarInfo) -> None:
        target_parts = split_member(m.linkname, self._what)
        if not target_parts:
            raise LayerError(f"{self._what}: hard link {m.name!r} has an empty target")
        src = self._parent(target_parts, create=False)
        src_st = None if src is None else self._lstat([*src[0], target_parts[-1]])
        if src is None or src_st is None or stat.S_ISDIR(src_st.st_mode):
            raise LayerError(f"{self._what}: hard link {m.name!r} -> {m.linkname!r}: the target "
                             "is missing or a directory")
        src_rel = "/".join([*src[0], target_parts[-1]])
        if src_rel == rel:
            return
        self._clear_existing(fd, name, rel, keep_dir=False)
        os.link(target_parts[-1], name, src_dir_fd=src[1], dst_dir_fd=fd, follow_symlinks=False)
        if src_rel in self.meta:
            self.meta[rel] = self.meta[src_rel]
        else:
            self._record(rel, m, src_st.st_ino)

    def _file(self, tar: tarfile.TarFile, fd: int, name: str, rel: str,
              m: tarfile.TarInfo) -> None:
        self._clear_existing(fd, name, rel, keep_dir=False)
        out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o600, dir_fd=fd)
        with os.fdopen(out, "wb") as f:
            src = tar.extractfile(m)
            if src is not None:
                shutil.copyfileobj(src, f, CHUNK)
            self._record(rel, m, os.fstat(f.fileno()).st_ino)

    # ---- after the last layer ---------------------------------------------------------

    def finalize(self) -> Finalized:
        """Put recorded modes/mtimes on the tree, measure it, and list the owner fix-ups.

        Paths without a (matching) record were made by banger (guest files): root-owned.
        """
        as_root = os.geteuid() == 0
        owners: list[Owner] = []
        seen: set[int] = set()
        total = inodes = 0
        root_meta = self.meta.get("")
        self._fix_entry(self.root_fd, ".", "", root_meta, as_root, owners, is_root=True)
        for dirpath, dirnames, filenames, dfd in os.fwalk(self.root, follow_symlinks=False):
            base = os.path.relpath(dirpath, self.root)
            base = "" if base == "." else base
            for name in [*dirnames, *filenames]:
                rel = f"{base}/{name}" if base else name
                st = self._fix_entry(dfd, name, rel, self.meta.get(rel), as_root, owners)
                inodes += 1
                if stat.S_ISDIR(st.st_mode):
                    total += max(st.st_blocks * 512, 4096)
                elif st.st_ino not in seen:
                    seen.add(st.st_ino)
                    total += st.st_blocks * 512
        return Finalized(owners, TreeUsage(total, inodes))

    @staticmethod
    def _fix_entry(dfd: int, name: str, rel: str, meta: Meta | None, as_root: bool,
                   owners: list[Owner], is_root: bool = False) -> os.stat_result:
        st = os.lstat(name, dir_fd=dfd)
        if meta is not None and meta.ino != st.st_ino and not is_root:
            meta = None  # replaced since it was recorded (e.g. by the guest-file injection)
        want_mode = meta.mode if meta else st.st_mode
        if stat.S_IFMT(want_mode) != stat.S_IFMT(st.st_mode):
            want_mode = st.st_mode
        uid, gid = (meta.uid, meta.gid) if meta else (0, 0)
        if not stat.S_ISLNK(st.st_mode):
            extra = 0 if as_root else (0o700 if stat.S_ISDIR(st.st_mode) else 0o400)
            host_mode = (want_mode & 0o7777) | extra
            if host_mode != stat.S_IMODE(st.st_mode):
                os.chmod(name, host_mode, dir_fd=dfd)
        if meta is not None:
            os.utime(name, ns=(meta.mtime * 10**9,) * 2, dir_fd=dfd, follow_symlinks=False)
        after = os.lstat(name, dir_fd=dfd)
        host_mode_now = stat.S_IMODE(after.st_mode)
        if (after.st_uid, after.st_gid) != (uid, gid) or (
            not stat.S_ISLNK(after.st_mode) and host_mode_now != want_mode & 0o7777
        ):
            owners.append(Owner("/" + rel, uid, gid, want_mode))
        return after


__all__ = ["Finalized", "Flattener", "LayerError", "Meta", "open_layer", "split_member"]
