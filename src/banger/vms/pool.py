"""The warm pool: restored, paused template clones waiting for a matching `vm create`.

A pooled clone is a template restore that has not been given an identity yet: its own VM dir
(`vms/<id>/`, marked by `pool.json`), its disk layered on the template's, QEMU launched, state
loaded, agent connected, then paused (no CPU; memory: what it touched, see docs/fast-start.md).
It has no row in the store, so `vm list`, `vm show`, DNS and the VM count never see it. A
`vm create` of the same shape takes one: its record gets the clone's id (so the dir, disk and
handles are already its own), the clone is unpaused and re-personalised exactly like a template
clone (`personalise_clone`); if that fails the clone is discarded and the VM starts the usual
way, with an event saying so. One refill at a time, only while no user create or start is under
way, and never past the host's available memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import msgspec

from banger.agent.client import AgentClient
from banger.artifacts import Artifacts, ImageFiles, KernelFiles
from banger.config import Config
from banger.config.host import available_mib
from banger.errors import BangerError, InvalidArgument
from banger.net import plan
from banger.paths import Paths
from banger.rpc.methods.pool import PoolShapeInfo
from banger.rpc.methods.vm import CreateRequest
from banger.textsafe import one_line
from banger.vmm.base import (
    Backend,
    NetworkAttachment,
    Pauser,
    PortForwarder,
    Snapshotter,
    VmHandles,
    VmSpec,
)
from banger.vms import events
from banger.vms.model import VmRecord
from banger.vms.owner import Owner
from banger.vms.pool_repo import PoolRepo, Shape
from banger.vms.repo import VmRepo
from banger.vms.restore import personalise_clone, restore
from banger.vms.start import Started, has_sshd, template_key
from banger.vms.templates import TemplateKey, Templates


class PoolHost(Protocol):
    """What the pool needs of the VM manager (which holds the pool: no import back)."""

    paths: Paths
    config: Config
    repo: VmRepo
    artifacts: Artifacts
    backend: Backend
    templates: Templates

    def new_record(self, req: CreateRequest, owner: Owner | None = None) -> VmRecord: ...

    async def pool_spec(self, shape: Shape,
                        vm_id: str) -> tuple[VmSpec, ImageFiles, KernelFiles]: ...

log = logging.getLogger("banger.vms.pool")
MARKER = "pool.json"  # in a VM dir: a pooled clone, not a VM (reaped at daemon start)
MAX_SIZE = 8  # per shape
MAX_TOTAL = 16  # clones over all shapes
RETRY_AFTER = 30.0  # seconds before a shape whose refill failed is tried again
HEADROOM_MIB = 256  # left to the host beyond a clone's full guest memory


@dataclass
class PoolEntry:
    id: str
    shape: Shape
    key: TemplateKey
    handles: VmHandles
    agent: AgentClient
    sshd: bool


class Busy:
    """User creates and starts under way: the pool refills only when there are none, and have
    been none for `quiet` seconds (a started VM's first command runs right after its start)."""

    def __init__(self, quiet: float = 1.0) -> None:
        self.count = 0
        self.quiet = quiet
        self._ended = 0.0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        self.count += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.count -= 1
            self._ended = time.monotonic()
            if self.count == 0:
                self._idle.set()

    async def wait_idle(self) -> None:
        while True:
            await self._idle.wait()
            left = self._ended + self.quiet - time.monotonic()
            if left <= 0 and not self.count:
                return
            await asyncio.sleep(max(left, 0.0))


def pss_mib(pid: int) -> float:
    """A process's proportional set size (shared pages divided among their users)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


class Pool:
    def __init__(self, mgr: PoolHost, repo: PoolRepo) -> None:
        self.mgr = mgr
        self.repo = repo
        self.ready: dict[Shape, list[PoolEntry]] = {}
        self.filling: Shape | None = None
        self.errors: dict[Shape, tuple[str, float]] = {}
        self.busy = Busy()
        self._wake = asyncio.Event()
        self._wake.set()  # a restarted daemon refills what the store says
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def supported(self) -> bool:
        backend = self.mgr.backend
        return (self.mgr.config.fast_start and isinstance(backend, Snapshotter)
                and isinstance(backend, Pauser))

    # ---- configuration

    def shape_for(self, image: str | None, vcpu: int | None, memory_mib: int | None) -> Shape:
        vm = self.mgr.new_record(CreateRequest(image=image, vcpu=vcpu, memory_mib=memory_mib,
                                               start=False))
        return Shape(vm.image, vm.vcpu, vm.memory_mib, vm.net_mode or "")

    async def set(self, shape: Shape, size: int) -> PoolShapeInfo:
        if not 0 <= size <= MAX_SIZE:
            raise InvalidArgument(f"pool size must be 0 to {MAX_SIZE}, not {size}")
        if size and not self.supported:
            raise InvalidArgument(f"the warm pool needs fast_start and a backend that can pause "
                                  f"restored VMs; {self.mgr.backend.name} here cannot")
        if size and shape.net_mode not in ("user", ""):
            raise InvalidArgument(f"the warm pool holds user-mode VMs only; this shape's network "
                                  f"is {shape.net_mode} (set network_mode = \"user\" or pass "
                                  "--net user to vm create)")
        if size:
            self.mgr.artifacts.check_known(image=shape.image, kernel=None)
        others = sum(n for s, n in self.repo.sizes().items() if s != shape)
        if others + size > MAX_TOTAL:
            raise InvalidArgument(f"the pool holds at most {MAX_TOTAL} clones in all; "
                                  f"{others} are set for other shapes")
        self.repo.set(shape, size)
        self.errors.pop(shape, None)
        await self.drain(shape, keep=size)
        self._wake.set()
        return self.info(shape)

    def info(self, shape: Shape) -> PoolShapeInfo:
        ready = self.ready.get(shape, [])
        error = self.errors.get(shape, ("", 0.0))[0]
        return PoolShapeInfo(shape.image, shape.vcpu, shape.memory_mib, shape.net_mode or "none",
                             self.repo.sizes().get(shape, 0), len(ready), self.filling == shape,
                             round(sum(pss_mib(e.handles.pid) for e in ready), 1), error)

    def shapes(self) -> list[PoolShapeInfo]:
        shapes = {*self.repo.sizes(), *(s for s, e in self.ready.items() if e)}
        return [self.info(s) for s in sorted(shapes, key=lambda s: msgspec.json.encode(s))]

    # ---- taking a clone

    def take(self, shape: Shape, image_sha256: str, kernel_digest: str,
             disk_mib: int) -> PoolEntry | None:
        """A ready clone of this shape, image, kernel and disk, or None; never waits."""
        entries = self.ready.get(shape, [])
        for entry in list(entries):
            if not self.mgr.backend.is_alive(entry.handles):
                entries.remove(entry)  # died while waiting: the refill replaces it
                self._discard_later(entry)
                continue
            key = entry.key
            entries.remove(entry)
            self._wake.set()
            if (key.image_sha256, key.kernel_digest, key.disk_mib) == (image_sha256,
                                                                       kernel_digest, disk_mib):
                log.info("handing pooled clone %s to a new VM", entry.id)
                return entry
            # made from an image or kernel that has changed since: never handed out
            self._discard_later(entry)
        return None

    def _discard_later(self, entry: PoolEntry) -> None:
        task = asyncio.get_running_loop().create_task(self.discard(entry))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def adopt(self, entry: PoolEntry, spec: VmSpec, setup: dict[str, object]) -> Started | None:
        """Unpause a taken clone and give it the VM's identity, network and keys; None (after
        discarding it) when it cannot, so the VM starts the usual way."""
        (spec.vm_dir / MARKER).unlink(missing_ok=True)
        backend = self.mgr.backend
        assert isinstance(backend, Pauser)
        try:
            await backend.unpause(entry.handles)
            if spec.network is not None and isinstance(backend, PortForwarder):
                for fwd in spec.network.hostfwds:  # ssh on the VM's own loopback address
                    await backend.add_forward(entry.handles, fwd, spec.network.isolated)
            await personalise_clone(entry.agent, spec.name, setup, has_sshd=entry.sshd)
        except BangerError as exc:
            await self.discard(entry, keep_dir=True)
            events.record(spec.vm_dir, f"the pooled clone did not resume ({exc.message}); "
                                       "starting the usual way")
            return None
        except BaseException:
            await entry.agent.close()  # the caller's cleanup kills the VMM
            raise
        events.record(spec.vm_dir, f"started from the warm pool (template {entry.key.id})")
        return entry.handles, entry.agent

    # ---- refilling

    def _wanted(self) -> Shape | None:
        now = time.monotonic()
        for shape, size in self.repo.sizes().items():
            error = self.errors.get(shape)
            if error is not None and now - error[1] < RETRY_AFTER:
                continue
            if len(self.ready.get(shape, [])) < size:
                if available_mib() < shape.memory_mib + HEADROOM_MIB:
                    self.errors[shape] = ("not enough free host memory for another clone", now)
                    continue
                return shape
        return None

    async def run(self) -> None:
        """The refill loop: one clone at a time, after every user start under way."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), RETRY_AFTER)
            self._wake.clear()
            while self.supported:
                await self.busy.wait_idle()
                shape = self._wanted()
                if shape is None:
                    break
                await self.fill_one(shape)

    async def fill_one(self, shape: Shape) -> PoolEntry | None:
        self.filling = shape
        try:
            entry = await self._fill(shape)
        except BangerError as exc:
            self.errors[shape] = (one_line(exc.message, 300), time.monotonic())
            log.warning("pool: restoring a clone of %s failed: %s", shape.image, exc.message)
            return None
        finally:
            self.filling = None
        self.errors.pop(shape, None)
        self.ready.setdefault(shape, []).append(entry)
        log.info("pool: clone %s of %s ready (%d)", entry.id, shape.image,
                 len(self.ready[shape]))
        return entry

    async def _fill(self, shape: Shape) -> PoolEntry:
        backend = self.mgr.backend
        assert isinstance(backend, Snapshotter) and isinstance(backend, Pauser)
        vm_id = secrets.token_hex(6)
        vm_dir = self.mgr.paths.vm_dir(vm_id)
        vm_dir.mkdir(parents=True)
        (vm_dir / MARKER).write_bytes(msgspec.json.encode(shape))  # first: a crash leaves it reapable
        try:
            spec, image, kernel = await self.mgr.pool_spec(shape, vm_id)
            if shape.net_mode == "user":
                spec = dataclasses.replace(spec, network=NetworkAttachment(
                    "user", mac=plan.mac_for(vm_id)))  # forwards are added when it is taken
            key = template_key(spec, image, kernel, backend)
            info = await self.mgr.templates.ensure(key, spec, lambda *_: None)
            await backend.prepare_disk_on(spec, self.mgr.templates.disk(info), None)
            incoming = dataclasses.replace(spec, incoming=self.mgr.templates.memory(info),
                                           memory_file=self.mgr.templates.ram(info))
            handles, agent = await restore(backend, incoming, lambda *_: None)
            try:
                await _warm_up(agent)
                await backend.pause(handles)
            except BaseException:
                await agent.close()
                await backend.kill(handles)
                raise
        except BaseException:
            shutil.rmtree(vm_dir, ignore_errors=True)
            raise
        return PoolEntry(vm_id, shape, key, handles, agent, has_sshd(image))

    # ---- draining, reaping

    async def drain(self, shape: Shape | None = None, *, keep: int = 0) -> None:
        """Discard ready clones (of one shape) beyond `keep`."""
        for s in [shape] if shape is not None else list(self.ready):
            entries = self.ready.get(s, [])
            while len(entries) > keep:
                await self.discard(entries.pop())

    async def discard(self, entry: PoolEntry, *, keep_dir: bool = False) -> None:
        vm_dir = self.mgr.paths.vm_dir(entry.id)
        await entry.agent.close()
        if self.mgr.backend.is_alive(entry.handles):
            await self.mgr.backend.kill(entry.handles)
        if keep_dir:  # taken by a VM: leave its dir, drop what a fresh start must not find
            VmHandles.clear(vm_dir)
            self.mgr.backend.disk_path(vm_dir).unlink(missing_ok=True)
        else:
            shutil.rmtree(vm_dir, ignore_errors=True)
        log.info("pool: discarded clone %s", entry.id)

    async def shutdown(self) -> None:
        """Daemon stop: pooled clones go with it."""
        await self.drain()

    async def reap(self) -> list[str]:
        """Daemon start: clones a previous daemon left (killed, crashed) are not VMs; remove them."""
        vms_dir = self.mgr.paths.vms_dir
        if not vms_dir.is_dir():
            return []
        known = {vm.id for vm in self.mgr.repo.all()}
        reaped: list[str] = []
        for d in vms_dir.iterdir():
            if not (d / MARKER).exists() or d.name in known:
                continue
            handles = VmHandles.load(d)
            if handles is not None and self.mgr.backend.is_alive(handles):
                await self.mgr.backend.kill(handles)
            shutil.rmtree(d, ignore_errors=True)
            reaped.append(d.name)
        if reaped:
            log.info("pool: reaped %d clone(s) of a previous daemon", len(reaped))
        return reaped


async def _warm_up(agent: AgentClient) -> None:
    """What every start runs first (an agent configure, a process), run once here, so TCG has
    translated it in this QEMU before the clone is handed out. No identity: that is the VM's."""
    await agent.configure(clock=time.time())
    proc = await agent.exec(["true"])
    await proc.wait()
