"""Apply OCI layer tars oldest-first onto a directory, never writing outside it.

The layers go through the one safe extractor (`banger.archive`): every write through
directory fds with O_NOFOLLOW, parents resolved inside the root (a lower layer's symlink is
read and resolved by banger, chroot-style, never followed by the kernel), sizes capped over
the whole image. Whiteouts and opaque directories are handled here. Ownership, modes and
mtimes from the tar headers are recorded per path (`Meta`) so they can be put into the ext4
image afterwards without privileges (`images.rootfs`, shared with recipe builds).
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

from banger.archive import ArchiveError, Limits, TarReader
from banger.archive.extract import Meta, Select
from banger.archive.tree import Real
from banger.images.rootfs import (
    ROOTFS_LIMITS,
    Finalized,
    RootfsTree,
    check_debugfs_name,
    split_member,
)

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
OCI_LIMITS = ROOTFS_LIMITS

LayerError = ArchiveError  # what a refused or corrupt layer raises


class Flattener(RootfsTree):
    """Unpacks layers into `root`; call `apply()` per layer, oldest first, then `finalize()`."""

    def __init__(self, root: Path, limits: Limits = OCI_LIMITS) -> None:
        super().__init__(root, "layer", limits)
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


__all__ = ["OCI_LIMITS", "Finalized", "Flattener", "LayerError", "Meta", "split_member"]
