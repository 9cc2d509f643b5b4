"""The busybox initramfs: module order, modules.dep, cpio contents, /init script."""

from __future__ import annotations

import stat
import struct
from pathlib import Path

import pytest

from banger.kernels.initramfs import (
    DEFAULT_INIT,
    build_initramfs,
    index_modules,
    init_script,
    load_order,
    module_depends,
    python_modules_dep,
    read_cpio,
)
from banger.runner import run, which

VERSION = "6.1.0-99-test"


def fake_ko(depends: str) -> bytes:
    """A minimal ELF64 relocatable with just a .modinfo section (what depmod's peers read)."""
    modinfo = f"license=GPL\x00depends={depends}\x00vermagic={VERSION}\x00".encode()
    shstrtab = b"\x00.modinfo\x00.shstrtab\x00"
    data_off = 64
    shoff = data_off + len(modinfo) + len(shstrtab)
    header = bytearray(64)
    header[:7] = b"\x7fELF\x02\x01\x01"
    struct.pack_into("<HHI", header, 16, 1, 62, 1)
    struct.pack_into("<Q", header, 0x28, shoff)
    struct.pack_into("<HHHH", header, 0x34, 64, 0, 0, 64)
    struct.pack_into("<HH", header, 0x3C, 3, 2)
    sh = struct.Struct("<IIQQQQIIQQ")
    sections = sh.pack(0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    sections += sh.pack(1, 1, 0, 0, data_off, len(modinfo), 0, 0, 1, 0)
    sections += sh.pack(10, 3, 0, 0, data_off + len(modinfo), len(shstrtab), 0, 0, 1, 0)
    return bytes(header) + modinfo + shstrtab + sections


FAKE_MODULES = {
    "kernel/drivers/virtio/virtio_ring.ko": "",
    "kernel/drivers/virtio/virtio.ko": "virtio_ring",
    "kernel/drivers/virtio/virtio_mmio.ko": "virtio,virtio_ring",
    "kernel/drivers/block/virtio_blk.ko": "virtio,virtio_ring",
    "kernel/drivers/net/virtio_net.ko": "net_failover,virtio,virtio_ring",
    "kernel/drivers/net/net_failover.ko": "failover",
    "kernel/net/core/failover.ko": "",
    "kernel/drivers/char/hw_random/virtio-rng.ko": "virtio,virtio_ring,rng_core",
    "kernel/drivers/char/hw_random/rng-core.ko": "",
    "kernel/fs/fuse/virtiofs.ko": "fuse,virtio,virtio_ring",
    "kernel/fs/fuse/fuse.ko": "",
    "kernel/drivers/unrelated.ko": "",
}


@pytest.fixture
def moddir(tmp_path: Path) -> Path:
    root = tmp_path / "kernel" / "lib" / "modules" / VERSION
    for rel, deps in FAKE_MODULES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(fake_ko(deps))
    return root


def test_modinfo_depends(moddir: Path) -> None:
    ko = moddir / "kernel/drivers/net/virtio_net.ko"
    assert module_depends(ko) == ["net_failover", "virtio", "virtio_ring"]


def test_load_order_puts_deps_first_and_skips_missing(moddir: Path) -> None:
    order = load_order(["virtio_blk", "vsock", "virtio_net", "virtio-rng"], index_modules(moddir))
    assert order == ["virtio_ring", "virtio", "virtio_blk", "failover", "net_failover",
                     "virtio_net", "rng_core", "virtio_rng"]


def test_python_modules_dep(moddir: Path) -> None:
    lines = dict(line.split(":", 1) for line in python_modules_dep(moddir).splitlines())
    deps = lines["kernel/drivers/net/virtio_net.ko"].split()
    assert set(deps) == {"kernel/drivers/virtio/virtio.ko", "kernel/drivers/virtio/virtio_ring.ko",
                         "kernel/drivers/net/net_failover.ko", "kernel/net/core/failover.ko"}
    # depmod's convention: a module comes before the modules it needs
    assert deps.index("kernel/drivers/virtio/virtio.ko") < deps.index(
        "kernel/drivers/virtio/virtio_ring.ko")
    assert lines["kernel/drivers/virtio/virtio_ring.ko"] == ""


def test_build_initramfs(tmp_path: Path, moddir: Path) -> None:
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF fake busybox")
    dest = tmp_path / "initramfs.img"
    order = build_initramfs(dest, busybox=busybox, moddir=moddir, version=VERSION)
    assert "unrelated" not in order and order[0] == "virtio_ring"
    entries = read_cpio(dest)
    assert entries["bin/busybox"].data == busybox.read_bytes()
    assert entries["bin/switch_root"].data == b"busybox"
    assert stat.S_ISLNK(entries["bin/sh"].mode)
    console = entries["dev/console"]
    assert stat.S_ISCHR(console.mode) and console.rdev == (5, 1)
    assert entries["init"].mode & 0o111 and b"switch_root" in entries["init"].data
    listed = entries["etc/banger/modules"].data.decode().split()
    assert listed[0] == f"/lib/modules/{VERSION}/kernel/drivers/virtio/virtio_ring.ko"
    assert all(p.lstrip("/") in entries for p in listed)
    assert f"lib/modules/{VERSION}/modules.dep" in entries
    assert not any("unrelated" in n for n in entries)
    assert not list(tmp_path.glob("initramfs-*"))  # temporary tree cleaned up


def test_init_script_defaults() -> None:
    text = init_script()
    assert f"DEFAULT_INIT={DEFAULT_INIT}" in text
    assert "FALLBACK_INIT=/sbin/init" in text
    assert 'say "switching to $init"' in text
    assert "@" not in text


@pytest.mark.skipif(which("busybox") is None, reason="busybox not installed")
def test_init_script_is_valid_shell(tmp_path: Path) -> None:
    script = tmp_path / "init"
    script.write_text(init_script())
    run(["busybox", "sh", "-n", script])
