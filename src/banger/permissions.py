"""Existing installs made private: group and other bits dropped from banger's own dirs and files.

New files are private already (the daemon runs with umask 077); this fixes what older versions
left 0755/0644. Symlinks are never followed (state/images may point at a shared dir), entries of
other owners are left alone, and the walk is shallow: banger's layout is at most a few levels
deep, while a rootfs tree being built must keep its modes.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from banger.paths import Paths

log = logging.getLogger("banger.daemon")

MAX_DEPTH = 4  # state/vms/<id>/<disk>, cache/oci/blobs/sha256/<digest>
TRANSIENT = (".staging-", ".trash-", ".deleting-", ".extract-")  # half-made trees, not ours to fix
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def make_install_private(paths: Paths) -> int:
    """Tighten state, cache and runtime dirs; returns how many entries changed mode."""
    changed = sum(make_tree_private(root) for root in (paths.state_dir, paths.cache_dir,
                                                       paths.runtime_dir))
    if changed:
        log.info("made %d existing files and dirs private (0700/0600)", changed)
    return changed


def make_tree_private(root: Path, depth: int = MAX_DEPTH) -> int:
    try:
        fd = os.open(root, _DIR_FLAGS)
    except OSError:  # missing, a symlink (ELOOP) or not a directory: nothing of ours to fix
        return 0
    try:
        return _walk(fd, depth)
    finally:
        os.close(fd)


def _walk(dir_fd: int, depth: int) -> int:
    changed = _tighten(dir_fd)
    if depth == 0:
        return changed
    with os.scandir(dir_fd) as entries:
        names = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries
                 if not e.is_symlink() and not e.name.startswith(TRANSIENT)
                 and (e.is_dir(follow_symlinks=False) or e.is_file(follow_symlinks=False))]
    for name, is_dir in names:
        try:
            fd = os.open(name, _DIR_FLAGS if is_dir else _FILE_FLAGS, dir_fd=dir_fd)
        except OSError:  # gone, swapped for a symlink, or unreadable: leave it
            continue
        try:
            changed += _walk(fd, depth - 1) if is_dir else _tighten(fd)
        finally:
            os.close(fd)
    return changed


def _tighten(fd: int) -> int:
    st = os.fstat(fd)
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != os.geteuid() or not mode & 0o077:
        return 0
    if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
        return 0
    os.fchmod(fd, mode & ~0o077)
    return 1
