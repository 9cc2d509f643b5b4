"""A real kernel pull from the host's Debian mirror, then a boot under QEMU/TCG to a marker.

The pulled kernel is cached under ${BANGER_TEST_CACHE:-~/.cache/banger-test} so re-runs
are fast; with an empty cache the pull runs cold. Boots hold /tmp/banger-vm-test.lock so
two VM suites never share this 2-core machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from banger.debian.mirror import resolve_mirror
from banger.errors import NotFound, OperationFailed
from banger.kernels.catalog import default_entry
from banger.kernels.initramfs import MODULES, CpioEntry, module_key, read_cpio
from banger.kernels.manifest import KernelManifest, get_kernel, kernel_dir, verify_kernel
from banger.kernels.pull import pull_kernel
from banger.paths import Paths
from banger.runner import arun, run, which

pytestmark = pytest.mark.network

CACHE = Path(os.environ.get("BANGER_TEST_CACHE") or Path.home() / ".cache" / "banger-test")
VM_LOCK = Path("/tmp/banger-vm-test.lock")
MARKER = "BANGER-KERNEL-TEST-MARKER"
BOOT_TIMEOUT = 60.0


@dataclass(frozen=True)
class Pulled:
    paths: Paths
    manifest: KernelManifest
    seconds: float | None  # pull time, None when the cached kernel was reused

    def file(self, name: str) -> Path:
        return kernel_dir(self.paths, self.manifest.name) / name


@pytest.fixture(scope="module")
def pulled() -> Pulled:
    base = CACHE / "kernel"
    paths = Paths(base / "config", base / "state", base / "cache", base / "run")
    entry = default_entry()
    with contextlib.suppress(NotFound, OperationFailed):
        cached = get_kernel(paths, entry.name)
        if not verify_kernel(paths, cached):
            return Pulled(paths, cached, None)
    start = time.monotonic()
    manifest = asyncio.run(pull_kernel(entry, paths, resolve_mirror("")))
    seconds = time.monotonic() - start
    print(f"\nkernel pull: {seconds:.1f} s ({manifest.package} {manifest.package_version})")
    return Pulled(paths, manifest, seconds)


@pytest.fixture(scope="module")
def initramfs(pulled: Pulled) -> dict[str, CpioEntry]:
    return read_cpio(pulled.file("initramfs.img"))


def test_manifest(pulled: Pulled) -> None:
    m = pulled.manifest
    assert m.package == f"linux-image-{m.kernel_version}"
    assert m.kernel_version.endswith("-cloud-amd64")
    assert set(m.files) == {"vmlinuz", "vmlinux", "initramfs.img"}
    assert m.mirror == resolve_mirror("").url and m.source_url.startswith(m.mirror)
    assert verify_kernel(pulled.paths, m) == []


def test_vmlinux_is_x86_64_elf(pulled: Pulled) -> None:
    with pulled.file("vmlinux").open("rb") as fh:
        head = fh.read(20)
    assert head[:4] == b"\x7fELF" and head[4] == 2  # ELF64
    assert int.from_bytes(head[18:20], "little") == 62  # EM_X86_64


def test_initramfs_contents(pulled: Pulled, initramfs: dict[str, CpioEntry]) -> None:
    busybox = initramfs["bin/busybox"]
    assert busybox.data[:4] == b"\x7fELF" and len(busybox.data) > 500_000
    assert b"switch_root /newroot" in initramfs["init"].data
    moddir = f"lib/modules/{pulled.manifest.kernel_version}"
    present = {module_key(Path(n).name) for n in initramfs if n.endswith(".ko")}
    assert {module_key(m) for m in MODULES} <= present
    dep = initramfs[f"{moddir}/modules.dep"].data.decode()
    blk = next(line for line in dep.splitlines() if "/virtio_blk.ko:" in line)
    assert "virtio_ring.ko" in blk
    order = initramfs["etc/banger/modules"].data.decode().split()
    assert [module_key(Path(p).name) for p in order] == pulled.manifest.modules


@contextlib.contextmanager
def vm_lock() -> Iterator[None]:
    with VM_LOCK.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # one VM suite at a time on this 2-core machine
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def make_root(tmp_path: Path, busybox: bytes, *, sbin_init: bool) -> Path:
    root = tmp_path / "rootdir"
    for d in ("bin", "dev", "proc", "sys", "sbin"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "bin/busybox").write_bytes(busybox)
    script = root / "marker-init"
    script.write_text(f"#!/bin/busybox sh\n/bin/busybox echo {MARKER}\n"
                      "/bin/busybox poweroff -f\necho o > /proc/sysrq-trigger\n")
    for f in (root / "bin/busybox", script):
        f.chmod(0o755)
    if sbin_init:
        (root / "sbin/init").symlink_to("/marker-init")  # absolute, as distros ship it
    image = tmp_path / "root.ext4"
    run(["mkfs.ext4", "-q", "-F", "-d", root, image, "16M"], what="mkfs.ext4")
    return image


def qemu_argv(pulled: Pulled, image: Path, log: Path, append: str) -> list[str | Path]:
    return [
        "qemu-system-x86_64", "-M", "microvm,pit=on,pic=on,rtc=on", "-accel", "tcg",
        "-m", "512", "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none",
        "-monitor", "none", "-serial", f"file:{log}",
        "-kernel", pulled.file("vmlinuz"), "-initrd", pulled.file("initramfs.img"),
        "-append", f"console=ttyS0 root=/dev/vda rootfstype=ext4 panic=-1 {append}".strip(),
        "-no-reboot", "-drive", f"id=root,file={image},format=raw,if=none",
        "-device", "virtio-blk-device,drive=root",
    ]


async def boot_once(argv: list[str | Path], log: Path) -> float | None:
    """Seconds from launch to the marker on the console, or None on a hang/crash."""
    log.unlink(missing_ok=True)
    start = time.monotonic()
    vm = asyncio.create_task(arun(argv, timeout=BOOT_TIMEOUT + 5, check=False, what="qemu"))
    try:
        while time.monotonic() - start < BOOT_TIMEOUT:
            seen = log.exists() and MARKER in log.read_text(errors="replace")
            if seen:
                found = time.monotonic() - start
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(vm), 10)  # let it power off
                return found
            if vm.done():
                return None
            await asyncio.sleep(0.02)
        return None
    finally:
        if not vm.done():
            vm.cancel()  # arun kills QEMU when cancelled
        with contextlib.suppress(asyncio.CancelledError, OperationFailed):
            await vm


def boot(pulled: Pulled, image: Path, tmp_path: Path, append: str) -> tuple[float, str]:
    log = tmp_path / "console.log"
    argv = qemu_argv(pulled, image, log, append)
    with vm_lock():
        for attempt in (1, 2):  # one retry: HOST-NOTES saw rare TCG calibration hangs
            seconds = asyncio.run(boot_once(argv, log))
            text = log.read_text(errors="replace") if log.exists() else ""
            if seconds is not None:
                return seconds, text
            if log.exists():
                shutil.copy(log, tmp_path / f"console-attempt{attempt}.log")
    tail = "\n".join(text.splitlines()[-25:])
    pytest.fail(f"no marker within {BOOT_TIMEOUT:.0f}s in two boots; console tail:\n{tail}")


needs_qemu = pytest.mark.skipif(
    which("qemu-system-x86_64") is None or which("mkfs.ext4") is None,
    reason="qemu-system-x86 and e2fsprogs are needed to boot",
)


@pytest.mark.vm
@needs_qemu
def test_boots_to_init_given_on_cmdline(pulled: Pulled, initramfs: dict[str, CpioEntry],
                                        tmp_path: Path) -> None:
    image = make_root(tmp_path, initramfs["bin/busybox"].data, sbin_init=False)
    seconds, log = boot(pulled, image, tmp_path, "init=/marker-init")
    print(f"\nboot to marker: {seconds:.2f} s")
    assert "banger-initramfs: switching to /marker-init" in log
    assert "banger-initramfs: ERROR" not in log


@pytest.mark.vm
@needs_qemu
def test_falls_back_to_sbin_init(pulled: Pulled, initramfs: dict[str, CpioEntry],
                                 tmp_path: Path) -> None:
    image = make_root(tmp_path, initramfs["bin/busybox"].data, sbin_init=True)
    _, log = boot(pulled, image, tmp_path, "")
    assert "/usr/local/lib/banger/init is missing in the root; falling back to /sbin/init" in log
    assert "banger-initramfs: switching to /sbin/init" in log

