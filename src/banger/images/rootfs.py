"""A root filesystem unpacked without privileges, its owners put into the ext4 afterwards.

Recipe builds (mmdebstrap's tarball) and OCI pulls (layers) unpack the same way, as root or as
a normal user: through the one safe extractor, every tar header's owner, mode and mtime
recorded per path (`Meta`), device nodes recorded instead of made. `finalize` puts the modes
and mtimes on the tree and lists what the tree cannot hold for this user; `ext4.make_ext4`
packs the tree as root of a user namespace (the user's files become root's) and
`ext4.apply_fixups` makes the listed owners, modes and device nodes in one debugfs pass.
"""

from __future__ import annotations

import os
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from banger.archive import GIB, Limits, TarReader
from banger.archive.extract import Extractor, Meta
from banger.archive.limits import refuse
from banger.archive.names import split_name
from banger.images.ext4 import Device, Owner, TreeUsage

MAX_NAME_BYTES = 255  # ext4's limit for one path component
BAD_CHARS = ('"', "\n", "\r", "\0")  # debugfs scripts cannot quote these
# Per image (all layers together); an archive announcing more is refused while it streams.
ROOTFS_LIMITS = Limits(members=2_000_000, member_bytes=16 * GIB, total_bytes=64 * GIB,
                       stream_bytes=128 * GIB)
DEVICE_KINDS = {tarfile.CHRTYPE: "c", tarfile.BLKTYPE: "b", tarfile.FIFOTYPE: "p"}


@dataclass
class Finalized:
    owners: list[Owner]  # fix-ups debugfs must make (what the host tree could not hold)
    usage: TreeUsage
    devices: list[Device] = field(default_factory=list)


def split_member(name: str, what: str) -> list[str]:
    """Components of a member path that ext4 and debugfs can hold; ArchiveError otherwise."""
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


def image_ids(st: os.stat_result) -> tuple[int, int]:
    """The owner a file gets in the image: this user's own ids become root's (see make_ext4)."""
    uid = 0 if st.st_uid == os.geteuid() else st.st_uid
    gid = 0 if st.st_gid == os.getegid() else st.st_gid
    return uid, gid


class RootfsTree(Extractor):
    """Unpacks tar streams into `root` (symlinks resolved inside it, chroot-style); then
    `finalize()`. With `devices`, device nodes and fifos are recorded for debugfs."""

    def __init__(self, root: Path, origin: str, limits: Limits = ROOTFS_LIMITS, *,
                 devices: bool = False) -> None:
        super().__init__(root, origin, limits, specials="skip", follow_in_root=True,
                         host_modes=False)
        self.root = root
        self.root_fd = self.tree.root_fd
        self.keep_devices = devices
        self.devices: dict[str, Device] = {}

    def __enter__(self) -> RootfsTree:
        return self

    def place(self, reader: TarReader, m: tarfile.TarInfo, parts: list[str]) -> None:
        for part in parts:
            check_debugfs_name(part, m.name, self.origin)
        kind = DEVICE_KINDS.get(m.type)
        if kind is None or not self.keep_devices:
            super().place(reader, m, parts)
            return
        placed = self.tree.parent(parts)
        assert placed is not None  # create=True never returns None
        rel = "/".join([*placed[0], parts[-1]])
        self.clear(placed[1], parts[-1], rel, keep_dir=False)
        mode = stat.S_IFCHR if kind == "c" else stat.S_IFBLK if kind == "b" else stat.S_IFIFO
        self.devices[rel] = Device("/" + rel, kind, m.devmajor, m.devminor, m.uid, m.gid,
                                   mode | (m.mode & 0o7777))

    def remove(self, fd: int, name: str, rel: str) -> None:
        super().remove(fd, name, rel)
        prefix = rel + "/"
        for key in [k for k in self.devices if k == rel or k.startswith(prefix)]:
            del self.devices[key]

    def clear(self, fd: int, name: str, rel: str, keep_dir: bool) -> bool:
        self.devices.pop(rel, None)  # a later member replaces a recorded device
        return super().clear(fd, name, rel, keep_dir)

    def finalize(self) -> Finalized:
        """Put recorded modes/mtimes on the tree, measure it, and list the fix-ups.

        Paths without a (matching) record were made by banger (guest files): root-owned.
        """
        owners: list[Owner] = []
        seen: set[int] = set()
        total = inodes = 0
        self._fix_entry(self.root_fd, ".", "", self.meta.get(""), owners, is_root=True)
        for dirpath, dirnames, filenames, dfd in os.fwalk(self.root, follow_symlinks=False):
            base = os.path.relpath(dirpath, self.root)
            base = "" if base == "." else base
            for name in [*dirnames, *filenames]:
                rel = f"{base}/{name}" if base else name
                st = self._fix_entry(dfd, name, rel, self.meta.get(rel), owners)
                inodes += 1
                if stat.S_ISDIR(st.st_mode):
                    total += max(st.st_blocks * 512, 4096)
                elif st.st_ino not in seen:
                    seen.add(st.st_ino)
                    total += st.st_blocks * 512
        devices = sorted(self.devices.values(), key=lambda d: d.path)
        return Finalized(owners, TreeUsage(total, inodes + len(devices)), devices)

    @staticmethod
    def _fix_entry(dfd: int, name: str, rel: str, meta: Meta | None, owners: list[Owner],
                   is_root: bool = False) -> os.stat_result:
        st = os.lstat(name, dir_fd=dfd)
        if meta is not None and meta.ino != st.st_ino and not is_root:
            meta = None  # replaced since it was recorded (e.g. by the guest-file injection)
        want_mode = meta.mode if meta else st.st_mode
        if stat.S_IFMT(want_mode) != stat.S_IFMT(st.st_mode):
            want_mode = st.st_mode
        uid, gid = (meta.uid, meta.gid) if meta else (0, 0)
        if not stat.S_ISLNK(st.st_mode):
            # Unprivileged: keep what we unpacked readable (and dirs enterable) by us.
            extra = 0 if os.geteuid() == 0 else (0o700 if stat.S_ISDIR(st.st_mode) else 0o400)
            host_mode = (want_mode & 0o7777) | extra
            if host_mode != stat.S_IMODE(st.st_mode):
                os.chmod(name, host_mode, dir_fd=dfd)
        if meta is not None:
            os.utime(name, ns=(meta.mtime * 10**9,) * 2, dir_fd=dfd, follow_symlinks=False)
        after = os.lstat(name, dir_fd=dfd)
        if image_ids(after) != (uid, gid) or (
            not stat.S_ISLNK(after.st_mode) and stat.S_IMODE(after.st_mode) != want_mode & 0o7777
        ):
            owners.append(Owner("/" + rel, uid, gid, want_mode))
        return after


__all__ = [
    "ROOTFS_LIMITS",
    "Finalized",
    "RootfsTree",
    "check_debugfs_name",
    "image_ids",
    "split_member",
]
