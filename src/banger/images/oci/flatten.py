"""Apply OCI layer tars oldest-first onto a directory, never writing outside it.

The layers go through the one safe extractor (`banger.archive`): every write through
directory fds with O_NOFOLLOW, parents resolved inside the root (a lower layer's symlink is
read and resolved by banger, chroot-style, never followed by the kernel), sizes capped over
the whole image. Whiteouts and opaque directories are handled here. Ownership, modes and
mtimes from the tar headers are recorded per path (`Meta`) so they can be put into the ext4
image afterwards without privileges (see `finalize`).
"""

from __future__ import annotations

import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

from banger.archive import GIB, ArchiveError, Limits, TarReader
from banger.archive.extract import Extractor, Meta, Select
from banger.archive.limits import refuse
from banger.archive.names import split_name
from banger.archive.tree import Real
from banger.images.ext4 import Owner, TreeUsage

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
MAX_NAME_BYTES = 255  # ext4's limit for one path component
BAD_CHARS = ('"', "\n", "\r", "\0")  # debugfs scripts cannot quote these
# Per image (all layers together); a layer announcing more is refused while it streams.
OCI_LIMITS = Limits(members=2_000_000, member_bytes=16 * GIB, total_bytes=64 * GIB,
                    stream_bytes=128 * GIB)

LayerError = ArchiveError  # what a refused or corrupt layer raises


@dataclass
class Finalized:
    owners: list[Owner]  # fix-ups debugfs must make (what the host tree could not hold)
    usage: TreeUsage


def split_member(name: str, what: str) -> list[str]:
    """Components of a member path that ext4 and debugfs can hold; LayerError otherwise."""
    parts = split_name(name, what)
    for part in parts:
        check_debugfs_name(part, name, what)
    return parts


def check_debugfs_name(part: str, name: str, what: str) -> None:
    """On top of the archive rules: a name ext4 and debugfs can hold."""
    try:
        size = len(part.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise refuse(what, name, "not valid UTF-8, debugfs cannot write it") from exc
    if size > MAX_NAME_BYTES or any(c in part for c in BAD_CHARS):
        raise refuse(what, name, "a name ext4/debugfs cannot hold")


class Flattener(Extractor):
    """Unpacks layers into `root`; call `apply()` per layer, oldest first, then `finalize()`."""

    def __init__(self, root: Path, limits: Limits = OCI_LIMITS) -> None:
        super().__init__(root, "layer", limits, specials="skip", follow_in_root=True,
                         host_modes=False)
        self.root = root
        self.root_fd = self.tree.root_fd
        self._touched: set[str] = set()

    def __enter__(self) -> Flattener:
        return self

    def start(self) -> None:
        super().start()
        self._touched = set()

    def placing(self, real: Real, rel: str) -> None:
        for i in range(1, len(real) + 1):
            self._touched.add("/".join(real[:i]))
        self._touched.add(rel)

    def member(self, reader: TarReader, m: tarfile.TarInfo, select: Select | None) -> None:
        parts = split_member(m.name, self.origin)
        name = parts[-1] if parts else ""
        if name == OPAQUE:
            real = self.tree.resolve_dir(parts[:-1], create=False)
            if real is not None:
                self._opaque(real)
        elif name.startswith(WHITEOUT):
            self._whiteout(parts[:-1], name[len(WHITEOUT):], m.name)
        else:
            super().member(reader, m, select)

    def _whiteout(self, parent_parts: list[str], target: str, raw: str) -> None:
        if target in ("", ".", ".."):
            raise self.tree.refuse(f"a whiteout of {target!r}: a whiteout names one entry")
        check_debugfs_name(target, raw, self.origin)
        real = self.tree.resolve_dir(parent_parts, create=False)
        if real is None:
            return
        rel = "/".join([*real, target])
        if rel in self._touched:
            return  # whiteouts only hide lower layers
        if self.tree.lstat([*real, target]) is not None:
            self.remove(self.tree.dir_fd(real), target, rel)

    def _opaque(self, real: Real) -> None:
        """Hide everything in `real` that this layer did not put there."""
        fd = self.tree.dir_fd(real)
        base = "/".join(real)
        for entry in list(os.scandir(fd)):
            rel = f"{base}/{entry.name}" if base else entry.name
            if rel not in self._touched:
                self.remove(fd, entry.name, rel)
            elif entry.is_dir(follow_symlinks=False):
                self._opaque((*real, entry.name))

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


__all__ = ["OCI_LIMITS", "Finalized", "Flattener", "LayerError", "Meta", "split_member"]
