"""VM lifecycle: create, start, stop, kill, delete, set. One asyncio lock per VM."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from banger.agent.client import AgentClient
from banger.artifacts import Artifacts, ImageFiles, KernelFiles, kernel_files
from banger.config import Config, format_size_mib
from banger.config import host as host_facts
from banger.egress_rules import Policy
from banger.egress_rules import edit as edit_rules
from banger.errors import (
    BangerError,
    Conflict,
    InvalidArgument,
    NotFound,
    NotRunning,
    OperationFailed,
)
from banger.images.manifest import get_image
from banger.kernels.manifest import get_kernel
from banger.namegen import generate
from banger.net.plan import VmNet, parse_publish
from banger.net.service import Network
from banger.paths import Paths
from banger.progress import Progress
from banger.rpc.methods.vm import CreateRequest
from banger.ssh.keys import forget_host
from banger.store import Store
from banger.store.db import utcnow
from banger.vmm.accel import choose_accel
from banger.vmm.base import Backend, BootArtifacts, PayloadDisk, Snapshotter, VmHandles, VmSpec
from banger.vms import checkpoints, events
from banger.vms.agents import AgentPool
from banger.vms.model import VmRecord, VmState, validate_name, validate_shape
from banger.vms.owner import Owner, OwnerWatch
from banger.vms.pool import Pool, PoolEntry
from banger.vms.pool_repo import PoolRepo, Shape
from banger.vms.repo import VmRepo
from banger.vms.restore import drop_saved_state, saved_state
from banger.vms.start import Clone, StartPath
from banger.vms.templates import TemplateInfo, Templates
from banger.workspace.filesync import git_identity_setup, sync_home

log = logging.getLogger("banger.vms")
STOP_GRACE = 20.0
Info = Callable[[str], None]


def net_view(vm: VmRecord) -> VmNet:
    """The part of a VM's record its networking works from."""
    return VmNet(vm.id, vm.name, vm.net_mode, nat=vm.nat, ip=vm.ip, mac=vm.mac,
                 publish=tuple(vm.publish), egress=tuple(vm.egress))


def spec_line(vm: VmRecord) -> str:
    return (f"spec: {vm.vcpu} vcpu · {vm.memory_mib} MiB · {format_size_mib(vm.disk_mib)} disk · "
            f"{vm.image}")


class VmManager:
    def __init__(self, paths: Paths, config: Config, store: Store, artifacts: Artifacts,
                 backend: Backend) -> None:
        self.paths = paths
        self.config = config
        self.repo = VmRepo(store)
        self.artifacts = artifacts
        self.backend = backend
        self.agents = AgentPool()
        self._locks: dict[str, asyncio.Lock] = {}
        self.accel = choose_accel(config.accel)
        self.templates = Templates(paths, backend, disks_in_use=self.base_disks_in_use)
        self.start_path = StartPath(backend, self.templates, fast_start=config.fast_start)
        self.net = Network(paths, config, backend)
        self.owners = OwnerWatch(self.owner_gone)
        self.pool = Pool(self, PoolRepo(store))

    def base_disks_in_use(self) -> set[Path]:
        """Frozen disks VMs' own disks and checkpoints are layered on: never deleted while so."""
        return checkpoints.disks_in_use(self.paths.vms_dir, self.templates.disks, self.backend)

    def lock(self, vm_id: str) -> asyncio.Lock:
        return self._locks.setdefault(vm_id, asyncio.Lock())

    # ---- create

    def new_record(self, req: CreateRequest, owner: Owner | None = None) -> VmRecord:
        d = self.config.sizes
        name = validate_name(req.name) if req.name else generate(self.repo.names())
        net_mode = self.net.mode(req.net)
        vm = VmRecord(
            id=secrets.token_hex(6), name=name, state=VmState.CREATED,
            image=req.image or self.config.default_image,
            kernel=req.kernel or "", vcpu=req.vcpu or d.vcpu.value,
            memory_mib=req.memory_mib or d.memory_mib.value, disk_mib=req.disk_mib or d.disk_mib.value,
            created_at=utcnow(), updated_at=utcnow(), net_mode=net_mode, nat=req.nat,
            publish=[str(parse_publish(p)) for p in req.publish],
            egress=self._egress_rules(req, net_mode),
            owner_pid=owner.pid if owner else None, owner_start=owner.start if owner else None,
        )
        validate_shape(vm.vcpu, vm.memory_mib, vm.disk_mib, host_cpus=host_facts.cpu_count(),
                       host_memory_mib=host_facts.memory_mib())
        self.net.check_tools(net_view(vm))
        return vm

    def _egress_rules(self, req: CreateRequest, net_mode: str) -> list[str]:
        """--allow, else config's egress_allow for a user-mode VM without --nat."""
        if req.allow is not None:
            return Policy.of(req.allow).texts()
        return [] if req.nat or net_mode != "user" else Policy.of(self.config.egress_allow).texts()

    async def create(self, req: CreateRequest, progress: Progress, info: Info,
                     owner: Owner | None = None) -> VmRecord:
        """owner: the client process whose exit deletes the VM (`vm run --rm`)."""
        with self.pool.busy():  # the pool refills only when no user start is under way
            return await self._create(req, progress, info, owner)

    async def _create(self, req: CreateRequest, progress: Progress, info: Info,
                      owner: Owner | None) -> VmRecord:
        vm = self.new_record(req, owner)
        if vm.name in self.repo.names():
            raise Conflict(f"a VM named {vm.name!r} already exists; pick another --name")
        self.artifacts.check_known(image=vm.image, kernel=req.kernel)
        info(spec_line(vm))
        image = await self.artifacts.image(vm.image, progress)
        kernel_name = req.kernel or image.manifest.kernel or self.config.default_kernel
        kernel = await self.artifacts.kernel(kernel_name, progress)
        if image.rootfs.stat().st_size > vm.disk_mib * 1024 * 1024:
            raise InvalidArgument(f"disk {format_size_mib(vm.disk_mib)} is smaller than image "
                                  f"{vm.image}; use --disk of at least "
                                  f"{-(-image.rootfs.stat().st_size // 1024**3)}G")
        vm = msgspec.structs.replace(vm, kernel=kernel_name)
        pooled = self._take_pooled(vm, req, image.manifest.sha256, kernel.digest)
        if pooled is not None:  # the clone's dir, disk and VMM become this VM's
            vm = msgspec.structs.replace(vm, id=pooled.id)
        try:
            where = self.net.allocate(net_view(vm), self.repo.addresses())  # no await until insert
            vm = msgspec.structs.replace(vm, ip=where.ip, mac=where.mac)
            self.repo.insert(vm)
        except BaseException:
            if pooled is not None:
                await self.pool.discard(pooled)
            raise
        if owner is not None:  # from here on, the owner's exit deletes it, even mid-start
            self.owners.watch(vm.id, owner)
        log.info("created VM %s (%s)%s", vm.name, vm.id,
                 f", removed when pid {owner.pid} exits" if owner else "")
        if req.start:
            await self.start(vm.id, progress, cold=req.cold, pooled=pooled)
        return self.repo.find(vm.id)

    def _take_pooled(self, vm: VmRecord, req: CreateRequest, image_sha256: str,
                     kernel_digest: str) -> PoolEntry | None:
        """A paused clone of exactly this VM's shape when the pool has one (never waits)."""
        if (not req.start or req.cold or req.kernel or vm.publish or vm.nat or vm.egress
                or vm.net_mode not in ("user", None) or not self.pool.ready
                or vm.disk_mib != self.config.sizes.disk_mib.value):
            return None
        shape = Shape(vm.image, vm.vcpu, vm.memory_mib, vm.net_mode or "")
        return self.pool.take(shape, image_sha256, kernel_digest, vm.disk_mib)

    async def pool_spec(self, shape: Shape,
                        vm_id: str) -> tuple[VmSpec, ImageFiles, KernelFiles]:
        """What a pooled clone of shape boots as (the template key a create would compute)."""
        vm = self.new_record(CreateRequest(image=shape.image, vcpu=shape.vcpu,
                                           memory_mib=shape.memory_mib, start=False))
        image = await self.artifacts.image(vm.image, lambda *_: None)
        vm = msgspec.structs.replace(vm, id=vm_id, name=f"pool-{vm_id}",
                                     kernel=image.manifest.kernel or self.config.default_kernel)
        return await self.boot_inputs(vm, lambda *_: None)

    # ---- start / stop

    async def _spec(self, vm: VmRecord, progress: Progress) -> VmSpec:
        return (await self.boot_inputs(vm, progress))[0]

    async def boot_inputs(self, vm: VmRecord,
                           progress: Progress) -> tuple[VmSpec, ImageFiles, KernelFiles]:
        image = await self.artifacts.image(vm.image, progress)
        kernel = await self.artifacts.kernel(vm.kernel, progress)
        boot_files = BootArtifacts(kernel.kernel, kernel.initrd, image.rootfs, kernel.vmlinux)
        spec = VmSpec(vm.id, vm.name, vm.vcpu, vm.memory_mib, vm.disk_mib,
                      self.paths.vm_dir(vm.id), boot_files, accel=self.accel)
        return spec, image, kernel

    async def start(self, ref: str, progress: Progress, *, cold: bool = False,
                    pooled: PoolEntry | None = None, clone: Clone | None = None) -> VmRecord:
        """clone: restore this saved state as the VM's first start (a fork)."""
        vm = self.repo.find(ref)
        if pooled is not None:  # its agent closes with the VM's whatever happens next
            self.agents.adopt(vm.id, pooled.agent)
        with self.pool.busy():
            return await self._start(vm, progress, cold, pooled, clone)

    async def _start(self, vm: VmRecord, progress: Progress, cold: bool,
                     pooled: PoolEntry | None, clone: Clone | None = None) -> VmRecord:
        async with self.lock(vm.id):
            vm = self.repo.find(vm.id)
            if vm.state == VmState.RUNNING:
                return vm
            if vm.state not in (VmState.CREATED, VmState.STOPPED, VmState.ERROR):
                raise Conflict(f"VM {vm.name} is {vm.state}; wait for it to finish")
            self.repo.set_state(vm.id, VmState.STARTING)
            started = time.monotonic()
            try:
                spec, image, kernel = await self.boot_inputs(vm, progress)
                spec = dataclasses.replace(spec, network=await self.net.prepare(net_view(vm)))
                setup = {**await self.net.guest_setup(net_view(vm)), **await git_identity_setup(),
                         "identity_ready": True}
                adopted = await self.pool.adopt(pooled, spec, setup) if pooled else None
                handles, agent = adopted or await self.start_path.launch(
                    spec, image, kernel, progress, cold=cold, setup=setup, clone=clone)
                self.agents.adopt(vm.id, agent)
                await self.net.activate(net_view(vm))
                await sync_home(agent, self.config.file_sync,
                                lambda message: progress("file_sync", None, message))
            except asyncio.CancelledError:
                await self.cleanup(vm)
                self.repo.set_state(vm.id, VmState.STOPPED, error="start cancelled")
                raise
            except BangerError as exc:
                await self.cleanup(vm)
                self.repo.set_state(vm.id, VmState.ERROR, error=exc.message)
                raise
            self.repo.set_state(vm.id, VmState.RUNNING)
            log.info("VM %s running (pid %d) in %.2fs", vm.name, handles.pid,
                     time.monotonic() - started)
            progress("ready", 1.0, f"{vm.name} is running")
            return self.repo.find(vm.id)

    async def cleanup(self, vm: VmRecord) -> None:
        """Undo a VM's transient resources: agent connection, VMM process, handles, sockets."""
        await self.agents.drop(vm.id)
        vm_dir = self.paths.vm_dir(vm.id)
        handles = VmHandles.load(vm_dir)
        if handles is not None:
            if self.backend.is_alive(handles):
                await self.backend.kill(handles)
            VmHandles.clear(vm_dir)
        for path in self.backend.runtime_files(vm_dir):
            path.unlink(missing_ok=True)
        await self.net.teardown(net_view(vm))  # tap, NAT rules, forwards: nothing of a stopped VM stays

    async def stop(self, ref: str, progress: Progress, *, timeout: float = STOP_GRACE,
                   save: bool = False) -> VmRecord:
        vm = self.repo.find(ref)
        async with self.lock(vm.id):
            vm = self.repo.find(vm.id)
            if vm.state not in (VmState.RUNNING, VmState.STARTING, VmState.STOPPING):
                return vm
            handles = self._saveable(vm) if save else None
            self.repo.set_state(vm.id, VmState.STOPPING)
            if handles is not None:
                await self._save(vm, handles, progress)
            await self._shutdown(vm, progress, timeout)
            self.repo.set_state(vm.id, VmState.STOPPED)
            progress("stopped", 1.0, f"{vm.name} stopped")
            return self.repo.find(vm.id)

    def _saveable(self, vm: VmRecord) -> VmHandles:
        if not isinstance(self.backend, Snapshotter):
            raise InvalidArgument(f"the {self.backend.name} backend cannot save VM state")
        handles = VmHandles.load(self.paths.vm_dir(vm.id))
        if handles is None or not self.backend.is_alive(handles):
            raise NotRunning(f"VM {vm.name} is not running; nothing to save")
        return handles

    async def _save(self, vm: VmRecord, handles: VmHandles, progress: Progress) -> None:
        """Write the running VM's memory next to its disk; `vm start` resumes from it once."""
        assert isinstance(self.backend, Snapshotter)
        progress("save", None, "saving memory and device state")
        await self.agents.drop(vm.id)
        try:
            await self.backend.save_state(handles, saved_state(self.paths.vm_dir(vm.id)))
        except BangerError as exc:  # the backend resumed the guest: it keeps running
            self.repo.set_state(vm.id, VmState.RUNNING)
            raise OperationFailed(f"saving {vm.name} failed, it keeps running: {exc.message}") from exc
        await self.backend.kill(handles)  # paused and saved: nothing left to shut down cleanly
        events.record(self.paths.vm_dir(vm.id), "stopped with its memory saved")

    async def _shutdown(self, vm: VmRecord, progress: Progress, timeout: float) -> None:
        """Agent poweroff, then the VMM's own shutdown, then kill."""
        handles = VmHandles.load(self.paths.vm_dir(vm.id))
        if handles is not None and self.backend.is_alive(handles):
            progress("stop", None, "asking the guest to power off")
            try:
                agent = await self.agents.get(vm.id, self.backend, handles, timeout=3.0)
                await agent.poweroff(timeout=3.0)
                stopped = await self.backend.wait_exit(handles, timeout)
            except BangerError as exc:
                log.warning("graceful stop of %s failed: %s", vm.name, exc.message)
                stopped = False
            if not stopped:
                progress("stop", None, f"{self.backend.name} quit")
                try:
                    await self.backend.request_shutdown(handles)
                except OperationFailed as exc:
                    log.warning("%s", exc.message)
                if not await self.backend.wait_exit(handles, 5.0):
                    await self.backend.kill(handles)
        await self.cleanup(vm)

    async def kill(self, ref: str) -> VmRecord:
        vm = self.repo.find(ref)
        await self.cleanup(vm)  # no lock: kill must work even when a stop hangs
        self.repo.set_state(vm.id, VmState.STOPPED)
        return self.repo.find(vm.id)

    async def delete(self, ref: str, *, force: bool, progress: Progress) -> VmRecord:
        vm = self.repo.find(ref)
        self.owners.forget(vm.id)
        if vm.state in (VmState.RUNNING, VmState.STARTING, VmState.STOPPING) and not force:
            raise Conflict(f"VM {vm.name} is {vm.state}; stop it first or use `banger vm delete -f`")
        if vm.state != VmState.STOPPED:
            await self.kill(vm.id)
        async with self.lock(vm.id):
            shutil.rmtree(self.paths.vm_dir(vm.id), ignore_errors=True)
            self.repo.delete(vm.id)
            self.templates.collect_disks()  # its template may be gone, kept for this VM's disk
            await asyncio.to_thread(forget_host, self.paths.state_dir, vm.name)
        self._locks.pop(vm.id, None)
        log.info("deleted VM %s (%s)", vm.name, vm.id)
        return vm

    async def owner_gone(self, vm_id: str) -> None:
        """The `vm run --rm` client that owns the VM exited: delete the VM, running or not."""
        try:
            vm = self.repo.find(vm_id)
        except NotFound:
            return  # its client's own delete came first
        log.info("VM %s: its owner (pid %s) is gone; deleting it (--rm)", vm.name, vm.owner_pid)
        async with self.lock(vm.id):
            pass  # a start under way ends first (its client left: it is being cancelled)
        try:
            await self.delete(vm.id, force=True, progress=lambda *_: None)
        except NotFound:
            pass
        except BangerError as exc:
            log.warning("VM %s: deleting it after its owner went failed: %s", vm.name,
                        exc.message)

    async def set_shape(self, ref: str, *, vcpu: int | None, memory_mib: int | None,
                        disk_mib: int | None) -> VmRecord:
        vm = self.repo.find(ref)
        async with self.lock(vm.id):
            vm = self.repo.find(vm.id)
            if (vcpu or memory_mib) and vm.state not in (VmState.CREATED, VmState.STOPPED,
                                                         VmState.ERROR):
                raise Conflict(f"VM {vm.name} is {vm.state}; stop it to change vcpu or memory")
            if disk_mib is not None and disk_mib < vm.disk_mib:
                raise InvalidArgument(f"disks only grow: {vm.name} has "
                                      f"{format_size_mib(vm.disk_mib)}")
            new = msgspec.structs.replace(vm, vcpu=vcpu or vm.vcpu,
                                          memory_mib=memory_mib or vm.memory_mib,
                                          disk_mib=disk_mib or vm.disk_mib)
            validate_shape(new.vcpu, new.memory_mib, new.disk_mib, host_cpus=host_facts.cpu_count(),
                           host_memory_mib=host_facts.memory_mib())
            disk_exists = self.backend.disk_path(self.paths.vm_dir(vm.id)).exists()
            if disk_mib and disk_mib != vm.disk_mib and disk_exists:
                if vm.state == VmState.RUNNING:
                    raise Conflict(f"VM {vm.name} is running; stop it to grow its disk")
                await self.backend.resize_disk(await self._spec(new, lambda *a: None))
            if (new.vcpu, new.memory_mib, new.disk_mib) != (vm.vcpu, vm.memory_mib, vm.disk_mib):
                drop_saved_state(self.backend, self.paths.vm_dir(vm.id))  # other shape now
            self.repo.update(vm.id, vcpu=new.vcpu, memory_mib=new.memory_mib, disk_mib=new.disk_mib)
            return self.repo.find(vm.id)

    async def set_egress(self, ref: str, *, allow: list[str], deny: list[str]) -> VmRecord:
        """Add and remove egress rules; a running VM's gate follows at once."""
        vm = self.repo.find(ref)
        async with self.lock(vm.id):
            vm = self.repo.find(vm.id)
            new = msgspec.structs.replace(vm, egress=edit_rules(vm.egress, allow, deny))
            self.net.check_tools(net_view(new))
            if vm.state == VmState.RUNNING and not vm.egress:
                raise Conflict(f"VM {vm.name} was started without egress rules; stop it, set "
                               "them, then start it")
            if vm.state in (VmState.STARTING, VmState.STOPPING):
                raise Conflict(f"VM {vm.name} is {vm.state}; wait for it to finish")
            if vm.state == VmState.RUNNING:
                await self.net.egress.update(vm.id, new.egress)
            self.repo.update(vm.id, egress=new.egress)
            return self.repo.find(vm.id)

    def payload_file(self, vm: VmRecord) -> Path | None:
        """The VM's payload disk (for bulk copies) when its backend gave it one."""
        if not isinstance(self.backend, PayloadDisk):
            return None
        return self.backend.payload_file(self.paths.vm_dir(vm.id))

    def template_current(self, info: TemplateInfo) -> bool:
        """Whether the template's image and kernel are still the ones on disk."""
        try:
            image = get_image(self.paths, info.key.image)
            kernel = kernel_files(self.paths, get_kernel(self.paths, info.key.kernel))
        except BangerError:
            return False
        return (image.sha256 == info.key.image_sha256
                and kernel.digest == info.key.kernel_digest)

    async def agent_for(self, ref: str) -> tuple[VmRecord, AgentClient]:
        vm = self.repo.find(ref)
        if vm.state != VmState.RUNNING:
            raise NotRunning(f"VM {vm.name} is {vm.state}; start it with `banger vm start {vm.name}`")
        handles = VmHandles.require(self.paths.vm_dir(vm.id), vm.name)
        agent = await self.agents.get(vm.id, self.backend, handles)
        return vm, agent

