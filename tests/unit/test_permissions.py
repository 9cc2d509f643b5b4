"""Existing installs made private without touching what is not banger's own."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from banger.permissions import make_tree_private


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_dirs_and_files_lose_group_and_other_bits(tmp_path: Path) -> None:
    root = tmp_path / "state"
    (root / "vms" / "abc").mkdir(parents=True)
    disk = root / "vms" / "abc" / "disk.qcow2"
    disk.write_bytes(b"x")
    tool = root / "vms" / "abc" / "helper"
    tool.write_bytes(b"#!/bin/sh\n")
    for path, old in ((root, 0o755), (root / "vms", 0o775), (disk, 0o644), (tool, 0o755)):
        path.chmod(old)
    assert make_tree_private(root) == 5  # with vms/abc, made 0755 by mkdir
    assert [mode(p) for p in (root, root / "vms", disk, tool)] == [0o700, 0o700, 0o600, 0o700]
    assert make_tree_private(root) == 0  # already private: nothing to do


def test_symlinks_half_made_trees_and_deep_content_are_left_alone(tmp_path: Path) -> None:
    root, outside = tmp_path / "state", tmp_path / "shared"
    outside.mkdir(mode=0o755)
    (outside / "rootfs.ext4").write_bytes(b"x")
    staged = root / "images" / ".staging-x" / "rootfs" / "usr" / "bin"
    staged.mkdir(parents=True)
    (staged / "sudo").write_bytes(b"x")
    deep = root / "a" / "b" / "c" / "d" / "e"
    deep.mkdir(parents=True)
    (root / "images" / "linked").symlink_to(outside)
    (root / "key").symlink_to(outside / "rootfs.ext4")
    for path in (outside, staged, staged / "sudo", deep):
        path.chmod(0o755)
    (outside / "rootfs.ext4").chmod(0o644)
    make_tree_private(root)
    assert mode(outside) == 0o755 and mode(outside / "rootfs.ext4") == 0o644
    assert mode(staged) == 0o755 and mode(staged / "sudo") == 0o755
    assert mode(deep) == 0o755 and mode(root / "a" / "b" / "c" / "d") == 0o700


def test_a_symlinked_root_is_not_followed(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o755)
    real.chmod(0o755)
    os.symlink(real, tmp_path / "state")
    assert make_tree_private(tmp_path / "state") == 0
    assert mode(real) == 0o755


def test_a_new_database_is_private_whatever_the_umask(tmp_path: Path) -> None:
    from banger.store import Store

    old = os.umask(0o022)
    try:
        store = Store(tmp_path / "banger.db")
        store.migrate()
    finally:
        os.umask(old)
    store.close()
    files = sorted(tmp_path.glob("banger.db*"))
    assert files and all(mode(f) == 0o600 for f in files), [(f.name, oct(mode(f))) for f in files]
