"""Templates: a VM shape booted once and saved, so new VMs restore instead of booting.

A template is `templates/<id>/` with `memory.snap` (its saved device state, and its memory
unless the backend keeps that in `memory.ram`) and `template.json`, written last; its frozen,
read-only disk is in `templates/.disks/`, kept while any VM's disk is layered on it. It is built
in a staging dir and renamed into place, so a half-built template is never used. Its id hashes
everything that must match for a restore: image and kernel content, VMM build, vcpu, memory,
accelerator and whether the VM has a NIC.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec

from banger.agent.client import AgentClient
from banger.durable import fsync_path
from banger.errors import NotFound, OperationFailed
from banger.net import plan
from banger.paths import Paths
from banger.progress import Progress
from banger.store.db import utcnow
from banger.vmm.base import Backend, NetworkAttachment, Snapshotter, VmHandles, VmSpec
from banger.vms.coldboot import boot

log = logging.getLogger("banger.vms.templates")
FORMAT = 2  # 2: QEMU templates keep guest RAM in memory.ram, mapped by each clone
TEMPLATE_HOSTNAME = "banger-template"


class TemplateKey(msgspec.Struct, frozen=True):
    image: str
    image_sha256: str
    kernel: str
    kernel_digest: str
    backend: str
    state_version: str
    vcpu: int
    memory_mib: int
    disk_mib: int  # the template grows its filesystem once, so its clones need no grow
    accel: str
    nic: bool
    format: int = FORMAT

    @property
    def id(self) -> str:
        return hashlib.sha256(msgspec.json.encode(self)).hexdigest()[:16]


class TemplateInfo(msgspec.Struct):
    id: str
    key: TemplateKey
    created: str
    disk_mib: int
    memory_bytes: int
    build_seconds: float
    ram_bytes: int = 0  # size of memory.ram when the backend keeps RAM in its own file
    disk_usage: int = 0  # bytes the template takes on disk (its files are sparse)
    disk_name: str = ""  # in templates/.disks: clones' disks are layered on it, so it outlives us


class Templates:
    def __init__(self, paths: Paths, backend: Backend,
                 disks_in_use: Callable[[], set[Path]] = set) -> None:
        self.root = paths.state_dir / "templates"
        self.disks = self.root / ".disks"  # hidden from list(): not templates themselves
        self.backend = backend
        self.disks_in_use = disks_in_use  # the base disks VMs' own disks are layered on
        self._locks: dict[str, asyncio.Lock] = {}
        self._building = 0
        self._pinned: set[str] = set()  # frozen disks being made (checkpoints, forks): not yet used

    def dir(self, template_id: str) -> Path:
        return self.root / template_id

    def disk(self, info: TemplateInfo) -> Path:
        return self.disks / info.disk_name

    def memory(self, info: TemplateInfo) -> Path:
        return self.dir(info.id) / "memory.snap"

    def ram(self, info: TemplateInfo) -> Path | None:
        return self.dir(info.id) / "memory.ram" if info.ram_bytes else None

    def _read(self, d: Path) -> TemplateInfo | None:
        try:
            info = msgspec.json.decode((d / "template.json").read_bytes(), type=TemplateInfo)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            return None
        return info

    def find(self, key: TemplateKey) -> TemplateInfo | None:
        """A complete template for this key, or None (a truncated state file does not count)."""
        info = self._read(self.dir(key.id))
        if info is None or info.key != key:
            return None
        try:
            ram = self.ram(info)
            if (self.memory(info).stat().st_size != info.memory_bytes
                    or not self.disk(info).exists()
                    or (ram is not None and ram.stat().st_size != info.ram_bytes)):
                log.warning("template %s is incomplete or truncated; ignoring it", info.id)
                return None
        except OSError:
            return None
        return info

    def list(self) -> list[TemplateInfo]:
        if not self.root.is_dir():
            return []
        found = [self._read(d) for d in sorted(self.root.iterdir()) if not d.name.startswith(".")]
        return [t for t in found if t is not None]

    def remove(self, template_id: str, *, missing_ok: bool = False) -> None:
        if not self.dir(template_id).exists():
            if missing_ok:
                return
            raise NotFound(f"no template {template_id!r}; `banger vm template list` shows them")
        self._discard(template_id)
        self.collect_disks()

    def _discard(self, template_id: str) -> None:
        trash = self.root / f".trash-{template_id}-{secrets.token_hex(4)}"
        with contextlib.suppress(FileNotFoundError):  # someone else got there first
            os.replace(self.dir(template_id), trash)  # vanish atomically, delete at leisure
        shutil.rmtree(trash, ignore_errors=True)

    @contextlib.contextmanager
    def pin(self, disk: Path) -> Iterator[None]:
        """Keep disk from collect_disks while it is made and until what uses it is published:
        another VM's delete collects under its own lock, not this one's."""
        self._pinned.add(disk.name)
        try:
            yield
        finally:
            self._pinned.discard(disk.name)

    def collect_disks(self) -> tuple[Path, ...]:
        """Delete frozen disks that no template and no VM's disk uses any more."""
        if self._building or not self.disks.is_dir():
            return ()  # a build may have moved its disk here but not yet written its json
        used = {self.disk(t) for t in self.list()} | self.disks_in_use()
        removed = tuple(d for d in self.disks.iterdir()
                        if d not in used  # a pinned disk's .part is its copy under way
                        and d.name.removesuffix(".part") not in self._pinned)
        for disk in removed:
            disk.unlink(missing_ok=True)
            log.info("removed template disk %s: no template or VM uses it", disk.name)
        return removed

    def cleanup_staging(self) -> None:
        if self.root.is_dir():
            for d in self.root.iterdir():
                if d.name.startswith((".staging-", ".trash-")):
                    shutil.rmtree(d, ignore_errors=True)

    async def ensure(self, key: TemplateKey, base_spec: VmSpec, progress: Progress) -> TemplateInfo:
        """The template for key, built now when missing; concurrent callers share one build."""
        async with self._locks.setdefault(key.id, asyncio.Lock()):
            info = self.find(key)
            if info is not None:
                return info
            return await self._build(key, base_spec, progress)

    async def _build(self, key: TemplateKey, base_spec: VmSpec, progress: Progress) -> TemplateInfo:
        if not isinstance(self.backend, Snapshotter):
            raise OperationFailed(f"the {self.backend.name} backend cannot save VM state")
        started = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        stage = self.root / f".staging-{key.id}-{secrets.token_hex(4)}"
        stage.mkdir()
        spec = template_spec(base_spec, key, stage, self.backend)
        self._building += 1
        try:
            progress("template", None, f"building a template for {key.image} "
                     f"({key.vcpu} vcpu, {key.memory_mib} MiB): one cold boot, then restores")
            handles, agent = await boot(self.backend, spec, progress)
            try:
                await _warm_up(agent, spec.network)
                await agent.close()  # the snapshot must show the host as gone, not mid-session
                await asyncio.sleep(0.05)
                progress("template", None, "saving memory and device state")
                await self.backend.save_state(handles, stage / "memory.snap")
            finally:
                await self.backend.kill(handles)
                VmHandles.clear(stage)
            info = _freeze(stage, key, spec, self.backend, self.disks, time.monotonic() - started)
            self._discard(key.id)  # an incomplete or unreadable one find() passed over
            os.replace(stage, self.dir(key.id))
            fsync_path(self.root)
        except OSError as exc:
            shutil.rmtree(stage, ignore_errors=True)
            raise OperationFailed(f"saving the template failed: {exc}") from exc
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        finally:
            self._building -= 1
        log.info("built template %s in %.1fs", key.id, info.build_seconds)
        return info


async def _warm_up(agent: AgentClient, network: NetworkAttachment | None) -> None:
    """Run what every clone runs first, so its code and files are already in the saved memory.
    User-mode guests all get the same address, so clones find theirs already set."""
    user_net = None
    if network is not None and network.mode == "user":
        user_net = {"mac": network.mac, "address": plan.USER_GUEST_ADDRESS,
                    "gateway": plan.USER_GATEWAY, "dns": [plan.USER_DNS]}
    await agent.configure(hostname=TEMPLATE_HOSTNAME, machine_id=secrets.token_hex(16),
                          entropy=secrets.token_bytes(64), clock=time.time(), network=user_net)
    proc = await agent.exec(["true"])
    await proc.wait()


def template_spec(base: VmSpec, key: TemplateKey, vm_dir: Path, backend: Backend) -> VmSpec:
    """The template boots the VM's shape with a neutral identity."""
    network = base.network
    # Same NIC model; its host side is not in the snapshot, so a private user-mode one will do
    # (firecracker has none: the template borrows the VM's tap, free until the clone starts).
    if network is not None and backend.user_network:
        network = dataclasses.replace(network, mode="user", tap="", netns="", hostfwds=(),
                                      restrict=True, isolated=False)
    return dataclasses.replace(base, vm_id=f"t{key.id[:11]}", name=TEMPLATE_HOSTNAME,
                               vm_dir=vm_dir, network=network, incoming=None,
                               memory_file=vm_dir / "memory.ram")


def _freeze(stage: Path, key: TemplateKey, spec: VmSpec, backend: Backend, disks: Path,
            took: float) -> TemplateInfo:
    """Keep the saved state and the RAM file; the disk (read-only from now on) goes where it
    can outlive the template: clones' disks are layered on it."""
    assert isinstance(backend, Snapshotter)
    disk = backend.disk_path(stage)
    disk.chmod(0o444)
    ram = stage / "memory.ram"
    state = backend.state_files(stage / "memory.snap")
    keep = {disk, ram, *state, stage / "console.log"}
    for leftover in stage.iterdir():
        if leftover not in keep and not leftover.name.endswith(".argv") and not leftover.is_dir():
            leftover.unlink(missing_ok=True)  # sockets, pid file, VMM logs
    for durable in (disk, *state, *([ram] if ram.exists() else [])):
        fsync_path(durable)  # a host crash must not leave a template.json over lost pages
    usage = sum(f.stat().st_blocks * 512 for f in stage.iterdir() if f.is_file())
    disks.mkdir(parents=True, exist_ok=True)
    frozen = disks / f"{key.id}-{secrets.token_hex(4)}{disk.suffix}"
    os.replace(disk, frozen)
    info = TemplateInfo(key.id, key, utcnow(), spec.disk_mib, state[0].stat().st_size,
                        round(took, 2), ram.stat().st_size if ram.exists() else 0, usage,
                        frozen.name)
    tmp = stage / "template.json.tmp"
    tmp.write_bytes(msgspec.json.encode(info))
    tmp.replace(stage / "template.json")
    fsync_path(disks)
    fsync_path(stage)
    return info
