"""ext4 helpers and guest-file injection, on small real images and temp trees."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from banger.errors import InvalidArgument, OperationFailed
from banger.guest import GuestFile
from banger.images import ext4
from banger.images.inject import (
    files_digest,
    inject_files,
    prepare_guest,
    resolve_in_root,
)


def test_sizes() -> None:
    small = ext4.TreeUsage(bytes=10 << 20, inodes=100)
    assert ext4.image_size(small) == ext4.GIB
    big = ext4.TreeUsage(bytes=2 * ext4.GIB, inodes=100)
    size = ext4.image_size(big)
    assert size >= int(2 * ext4.GIB * 1.3) and size % ext4.MIB == 0
    many = ext4.TreeUsage(bytes=10 << 20, inodes=200_000)
    assert ext4.inode_count(ext4.GIB, many) == 400_000


def test_tree_usage_counts_hardlinks_once(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 100_000)
    os.link(tmp_path / "a", tmp_path / "b")
    (tmp_path / "c").symlink_to("/nonexistent")
    usage = ext4.tree_usage(tmp_path)
    assert usage.inodes == 2
    assert 100_000 <= usage.bytes < 200_000


def test_mkfs_stat_read_and_set_owners(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/hello").write_text("hi there\n")
    (tree / "odd name").write_text("")
    img = tmp_path / "img.ext4"
    asyncio.run(ext4.make_ext4(tree, img, 8 << 20))
    assert "Type: regular" in asyncio.run(ext4.stat_path(img, "/etc/hello"))
    assert asyncio.run(ext4.read_text(img, "/etc/hello")) == "hi there\n"
    owners = [ext4.Owner("/etc/hello", 1000, 1001, 0o100600), ext4.Owner("/odd name", 7, 8)]
    asyncio.run(ext4.set_owners(img, owners))
    st = asyncio.run(ext4.stat_path(img, "/etc/hello"))
    assert "User:  1000" in st and "Group:  1001" in st and "Mode:  0600" in st
    assert "User:     7" in asyncio.run(ext4.stat_path(img, "/odd name"))
    with pytest.raises(OperationFailed, match="missing"):
        asyncio.run(ext4.set_owners(img, [ext4.Owner("/missing", 1, 1)]))
    with pytest.raises(OperationFailed):
        asyncio.run(ext4.stat_path(img, "/nope"))


def test_owner_script_rejects_unencodable_paths() -> None:
    with pytest.raises(InvalidArgument):
        ext4.owner_script([ext4.Owner('/a"b', 0, 0)])
    with pytest.raises(InvalidArgument):
        ext4.owner_script([ext4.Owner("relative", 0, 0)])


def test_inject_stays_inside_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "usr").mkdir(parents=True)
    # An absolute symlink must be resolved inside the root, never on the host.
    (root / "usr/local").symlink_to(str(outside))
    (root / "etc").mkdir()
    (root / "etc/victim").symlink_to(str(outside / "victim"))
    files = [
        GuestFile("/usr/local/lib/banger/init", b"#!/bin/sh\n", 0o755),
        GuestFile("/etc/victim", b"replaced", 0o640),
    ]
    written = inject_files(root, files)
    assert list(outside.iterdir()) == []
    inside = root / str(outside).lstrip("/")  # where /usr/local points, seen from the root
    init = inside / "lib/banger/init"
    assert written[0] == init and init.read_bytes() == b"#!/bin/sh\n"
    assert init.stat().st_mode & 0o777 == 0o755
    victim = root / "etc/victim"
    assert not victim.is_symlink() and victim.read_bytes() == b"replaced"
    assert victim.stat().st_mode & 0o777 == 0o640
    assert resolve_in_root(root, "/usr/local/x") == inside


def test_inject_rejects_bad_paths(tmp_path: Path) -> None:
    for bad in ("relative/x", "/a/../b", "/dir/"):
        with pytest.raises(InvalidArgument):
            inject_files(tmp_path, [GuestFile(bad, b"", 0o644)])


def test_inject_refuses_file_as_directory(tmp_path: Path) -> None:
    (tmp_path / "usr").write_text("not a dir")
    with pytest.raises(OperationFailed, match="not a directory"):
        inject_files(tmp_path, [GuestFile("/usr/x", b"", 0o644)])


def test_prepare_guest(tmp_path: Path) -> None:
    root = tmp_path
    for d in ("etc/ssh", "usr/sbin", "root", "var/lib/dbus"):
        (root / d).mkdir(parents=True)
    (root / "usr/sbin/sshd").write_text("")
    (root / "etc/ssh/ssh_host_ed25519_key").write_text("secret")
    (root / "etc/machine-id").write_text("0123456789abcdef\n")
    (root / "var/lib/dbus/machine-id").write_text("0123456789abcdef\n")
    (root / "etc/resolv.conf").write_text("nameserver 192.0.2.1\n")
    prepare_guest(root)
    assert (root / "etc/machine-id").read_text() == ""
    assert os.readlink(root / "var/lib/dbus/machine-id") == "/etc/machine-id"
    assert not (root / "etc/ssh/ssh_host_ed25519_key").exists()
    dropin = root / "etc/systemd/system/ssh.service.d/banger-hostkeys.conf"
    assert "identity-ready" in dropin.read_text()
    assert "192.0.2.1" not in (root / "etc/resolv.conf").read_text()
    assert (root / "root/.ssh").stat().st_mode & 0o777 == 0o700
    assert "banger" in (root / "etc/hosts").read_text()
    assert (root / "var/lib/banger").is_dir()


def test_files_digest_matches_packaged_digest() -> None:
    from banger.guest import guest_files, guest_files_digest

    assert files_digest(guest_files()) == guest_files_digest()  # a missing file fails here
