"""A daemon's VM layer on the fake backend: real Paths, Config, Store, image and kernel files.

`FakeDaemon.manager()` builds a VmManager the way bangerd does; calling it again is a daemon
restart (same state dir, same fake machine, new manager and backend).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from banger.artifacts import Artifacts
from banger.config import load_config
from banger.images.manifest import ImageManifest, write_manifest
from banger.kernels.manifest import INITRAMFS, VMLINUZ, KernelManifest
from banger.kernels.manifest import write_manifest as write_kernel_manifest
from banger.paths import Paths, resolve_paths
from banger.rpc.methods.vm import CreateRequest
from banger.store import Store
from banger.vms import events
from banger.vms.manager import VmManager
from banger.vms.model import VmRecord
from tests.fakes.backend import FakeBackend, FakeMachine

IMAGE = "fake-image"
KERNEL = "fake-kernel"
CONFIG = f"""\
network_mode = "user"
default_image = "{IMAGE}"
default_kernel = "{KERNEL}"
fast_start = {{fast_start}}

[vm_defaults]
vcpu = 1
memory = "256M"
disk = "1G"
"""


@dataclass
class Progress:
    """Collects progress messages, as the CLI would print them."""

    lines: list[str] = field(default_factory=list)

    def __call__(self, stage: str, fraction: float | None = None, message: str = "") -> None:
        self.lines.append(f"{stage}: {message}")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def install_image(paths: Paths) -> None:
    """A registered image whose rootfs is a small file (the fake VMM never reads it)."""
    d = paths.images_dir / IMAGE
    d.mkdir(parents=True)
    rootfs = b"fake rootfs\n"
    (d / "rootfs.ext4").write_bytes(rootfs)
    write_manifest(d / "manifest.json", ImageManifest(
        name=IMAGE, distro="debian", arch="amd64", kernel=KERNEL, sha256=_digest(rootfs),
        size=len(rootfs), built="2026-01-01T00:00:00Z"))


def install_kernel(paths: Paths) -> None:
    d = paths.kernels_dir / KERNEL
    d.mkdir(parents=True)
    files = {VMLINUZ: b"fake bzImage\n", INITRAMFS: b"fake initramfs\n"}
    for name, data in files.items():
        (d / name).write_bytes(data)
    write_kernel_manifest(d, KernelManifest(
        name=KERNEL, kind="bundle", kernel_version="6.1.0-fake",
        files={name: _digest(data) for name, data in files.items()}))


def request(name: str, **options: Any) -> CreateRequest:
    """The create request the CLI sends; the one place that knows the request type."""
    return CreateRequest(name=name, **options)


class FakeDaemon:
    def __init__(self, home: Path, *, fast_start: bool = True) -> None:
        self.paths = resolve_paths({"BANGER_HOME": str(home)})
        self.paths.ensure()
        self.paths.config_file.write_text(CONFIG.format(fast_start=str(fast_start).lower()))
        install_image(self.paths)
        install_kernel(self.paths)
        self.store = Store(self.paths.db_file)
        self.store.migrate()
        self.machine = FakeMachine()
        self.backend = FakeBackend(self.machine)
        self.vms = self.manager()

    def manager(self) -> VmManager:
        """A VmManager built as bangerd builds it, on a new backend with an empty call log."""
        self.backend = FakeBackend(self.machine)
        config = load_config(self.paths)
        self.vms = VmManager(self.paths, config, self.store, Artifacts(self.paths, config),
                             self.backend)
        return self.vms

    async def restart(self) -> VmManager:
        """The daemon dies (its agent connections close with it) and a new one starts."""
        for vm in self.vms.repo.all():
            await self.vms.agents.drop(vm.id)
        return self.manager()

    async def create(self, name: str, progress: Progress | None = None,
                     **options: Any) -> VmRecord:
        """`banger vm create --name NAME ...`: the record it prints."""
        return await self.vms.create(request(name, **options), progress or Progress(),
                                     lambda line: None)

    def vm_dir(self, vm: VmRecord) -> Path:
        return self.paths.vm_dir(vm.id)

    def events(self, vm: VmRecord) -> list[str]:
        """The messages `banger vm show` lists under events."""
        return [event["message"] for event in events.recent(self.vm_dir(vm))]

    def shown(self, vm: VmRecord) -> VmRecord:
        return self.vms.repo.find(vm.id)

    def close(self) -> None:
        self.machine.shutdown()
        self.store.close()


def daemon_fixture(*, fast_start: bool) -> Callable[[], Iterator[FakeDaemon]]:
    """A pytest fixture: a FakeDaemon in a short home dir (Unix socket paths fit in 108 bytes)."""

    @pytest.fixture
    def fixture() -> Iterator[FakeDaemon]:
        home = Path(tempfile.mkdtemp(prefix="bf-", dir="/tmp"))
        daemon = FakeDaemon(home, fast_start=fast_start)
        try:
            yield daemon
        finally:
            daemon.close()
            shutil.rmtree(home, ignore_errors=True)

    return fixture


