"""Checkpoints: take one of a VM (live: it keeps running), list, delete, restore in place.

A restore first checkpoints the state it replaces (`auto-<time>`) unless told to discard it,
so no restore loses work. The layout on disk is vms/checkpoints.py's; docs/snapshots.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from banger.durable import fsync_path
from banger.errors import (
    BangerError,
    Conflict,
    InvalidArgument,
    NotFound,
    NotRunning,
    OperationFailed,
)
from banger.progress import Progress
from banger.rpc.methods.snapshot import SnapshotInfo, SnapshotRestoreResult
from banger.store.db import utcnow
from banger.vmm.base import Checkpointer, Pauser, Snapshotter, VmHandles
from banger.vms import checkpoints, events
from banger.vms.checkpoints import SnapshotMeta
from banger.vms.manager import VmManager
from banger.vms.model import VmRecord, VmState
from banger.vms.restore import drop_saved_state, saved_state

log = logging.getLogger("banger.vms.snapshots")


def info(meta: SnapshotMeta) -> SnapshotInfo:
    return SnapshotInfo(meta.name, meta.created, meta.size_bytes, meta.memory, meta.auto)


def require_checkpointer(mgr: VmManager) -> Checkpointer:
    if not isinstance(mgr.backend, Checkpointer):
        raise InvalidArgument(f"the {mgr.backend.name} backend cannot checkpoint or fork VMs; "
                              "use vmm = qemu")
    return mgr.backend


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


@dataclasses.dataclass
class _Touched:
    vm: bool = False  # a restore stopped the VM or dropped its saved state: it may be lost
    paused: bool = False  # the restore paused the running VM (resumed if it fails untouched)


class Snapshots:
    def __init__(self, mgr: VmManager) -> None:
        self.mgr = mgr
        self.backend = require_checkpointer(mgr)

    def _dir(self, vm: VmRecord) -> Path:
        return checkpoints.root(self.mgr.paths.vm_dir(vm.id))

    def find(self, vm: VmRecord, name: str) -> SnapshotMeta:
        meta = checkpoints.read(self._dir(vm) / checkpoints.validate_name(name))
        if meta is None:
            raise NotFound(f"VM {vm.name} has no checkpoint {name!r}; "
                           f"`banger vm snapshot list {vm.name}` shows them")
        return meta

    def list(self, ref: str) -> list[SnapshotInfo]:
        vm = self.mgr.repo.find(ref)
        return [info(m) for m in checkpoints.metas(self.mgr.paths.vm_dir(vm.id))]

    async def create(self, ref: str, name: str | None, progress: Progress) -> SnapshotInfo:
        vm = self.mgr.repo.find(ref)
        async with self.mgr.lock(vm.id):
            vm = self.mgr.repo.find(vm.id)
            name = f"snap-{_stamp()}" if name is None else name
            return info(await self._create(vm, name, progress, auto=False))

    async def _create(self, vm: VmRecord, name: str, progress: Progress, *,
                      auto: bool) -> SnapshotMeta:
        """Under the VM's lock. A failure leaves no checkpoint and the VM as it was."""
        checkpoints.validate_name(name)
        vm_dir = self.mgr.paths.vm_dir(vm.id)
        self._sweep(vm)
        if (self._dir(vm) / name).exists():
            raise Conflict(f"VM {vm.name} already has a checkpoint {name!r}; pick another name")
        handles = self._handles(vm)
        disk = self.mgr.backend.disk_path(vm_dir)
        if not disk.exists():
            raise NotRunning(f"VM {vm.name} has no disk yet; start it once first")
        token = secrets.token_hex(4)
        stage = self._dir(vm) / f".staging-{name}-{token}"
        stage.mkdir(parents=True)
        disks = self.mgr.templates.disks
        disks.mkdir(parents=True, exist_ok=True)
        base = disks / f"snap-{vm.id}-{token}{disk.suffix}"
        memory = stage / checkpoints.MEMORY
        with self.mgr.templates.pin(base):  # nothing layers on base until the rename publishes it
            meta = await self._take(vm, handles, stage, base, memory, name, auto, progress)
        events.record(vm_dir, f"checkpoint {name} taken" + ("" if meta.memory else " (disk only)"))
        return meta

    async def _take(self, vm: VmRecord, handles: VmHandles | None, stage: Path, base: Path,
                    memory: Path, name: str, auto: bool, progress: Progress) -> SnapshotMeta:
        vm_dir = self.mgr.paths.vm_dir(vm.id)
        try:
            if handles is not None:
                progress("snapshot", None, f"checkpointing {vm.name}: memory and disk")
                await self.backend.checkpoint(handles, vm_dir, base, memory)
            else:
                await self.backend.checkpoint(None, vm_dir, base, None)
                if saved_state(vm_dir).exists():  # `vm stop --save`: the state goes along
                    os.link(saved_state(vm_dir), memory)
            usage = sum(f.stat().st_blocks * 512 for f in (base, memory) if f.exists())
            meta = SnapshotMeta(name, utcnow(), base.name, memory.exists(), auto, vm.vcpu,
                                vm.memory_mib, vm.disk_mib, usage, vm.workspace)
            (stage / checkpoints.META).write_bytes(msgspec.json.encode(meta))
            # Durable before it is listed: an automatic checkpoint may be the only copy.
            for part in (base, memory, stage / checkpoints.META):
                if part.exists():
                    fsync_path(part)
            fsync_path(base.parent)
            fsync_path(stage)
            os.replace(stage, self._dir(vm) / name)
            fsync_path(self._dir(vm))
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            base.unlink(missing_ok=True)
            raise
        return meta

    def _sweep(self, vm: VmRecord) -> None:
        """Under the VM's lock no other checkpoint work of it is under way: dot-dirs are what a
        killed daemon left (half-made checkpoints, restores, deletes)."""
        d = self._dir(vm)
        for leftover in d.iterdir() if d.is_dir() else ():
            if leftover.name.startswith("."):
                shutil.rmtree(leftover, ignore_errors=True)

    def _handles(self, vm: VmRecord) -> VmHandles | None:
        """The running VM's handles; None when it is stopped; Conflict mid-transition."""
        if vm.state == VmState.RUNNING:
            handles = VmHandles.require(self.mgr.paths.vm_dir(vm.id), vm.name)
            if not self.mgr.backend.is_alive(handles):
                raise NotRunning(f"VM {vm.name}'s VMM is gone; `banger vm restart {vm.name}`")
            return handles
        if vm.state in (VmState.STOPPED, VmState.CREATED, VmState.ERROR):
            return None
        raise Conflict(f"VM {vm.name} is {vm.state}; wait for it to finish")

    async def delete(self, ref: str, name: str) -> SnapshotInfo:
        vm = self.mgr.repo.find(ref)
        async with self.mgr.lock(vm.id):
            meta = self.find(vm, name)
            self._remove(vm, name)
        events.record(self.mgr.paths.vm_dir(vm.id), f"checkpoint {name} deleted")
        return info(meta)

    def _remove(self, vm: VmRecord, name: str) -> None:
        trash = self._dir(vm) / f".trash-{name}-{secrets.token_hex(4)}"
        os.replace(self._dir(vm) / name, trash)  # gone at once, deleted at leisure
        shutil.rmtree(trash, ignore_errors=True)
        self.mgr.templates.collect_disks()  # its disk, unless something else layers on it

    async def restore(self, ref: str, name: str, *, discard: bool, progress: Progress,
                      run: bool | None = None) -> SnapshotRestoreResult:
        """run: start the VM afterwards (default: when it is running now)."""
        vm = self.mgr.repo.find(ref)
        async with self.mgr.lock(vm.id):
            vm = self.mgr.repo.find(vm.id)
            meta = self.find(vm, name)
            if meta.memory and (meta.vcpu, meta.memory_mib) != (vm.vcpu, vm.memory_mib):
                raise InvalidArgument(f"checkpoint {name} was taken with {meta.vcpu} vcpu and "
                                      f"{meta.memory_mib} MiB; set VM {vm.name} back to that "
                                      "with `banger vm set` first")
            handles = self._handles(vm)
            running = handles is not None
            run = running if run is None else run
            vm_dir = self.mgr.paths.vm_dir(vm.id)
            auto = None
            touched = _Touched()
            try:
                if not discard and self.mgr.backend.disk_path(vm_dir).exists():
                    # Paused from the automatic checkpoint on: what the guest wrote after it
                    # would be lost with the VM.
                    touched.paused = await self._pause(handles)
                    auto = (await self._create(vm, f"auto-{_stamp()}-{secrets.token_hex(2)}",
                                               progress, auto=True)).name
                progress("restore", None, f"putting {vm.name} back to checkpoint {name}")
                await self._put_back(vm, meta, running, touched)
            except BaseException as exc:
                if not touched.vm and touched.paused and handles is not None:
                    await self._unpause(vm, handles)
                if auto is None:
                    raise
                if not touched.vm:  # the VM was not touched: the current state is current
                    self._remove(vm, auto)
                    raise
                # The automatic checkpoint may be the only copy of the state the VM had: keep it.
                events.record(vm_dir, f"restoring checkpoint {name} failed; the state before "
                                      f"is checkpoint {auto}")
                if not isinstance(exc, BangerError):
                    raise
                raise OperationFailed(f"restoring checkpoint {name} failed ({exc.message}); "
                                      f"{vm.name}'s state before it is kept as checkpoint {auto} "
                                      f"(`banger vm snapshot restore {vm.name} {auto}`)") from exc
        if run:
            try:
                await self.mgr.start(vm.id, progress)
            except BangerError as exc:
                if auto is None:
                    raise
                # Back to the state before: what the automatic checkpoint is for.
                await self.restore(vm.id, auto, discard=True, progress=progress, run=True)
                raise OperationFailed(f"restoring checkpoint {name} failed ({exc.message}); "
                                      f"{vm.name} is back as it was (checkpoint {auto})") from exc
        events.record(vm_dir, f"restored checkpoint {name}"
                              + (f"; the state before is checkpoint {auto}" if auto else ""))
        return SnapshotRestoreResult(name, auto, self.mgr.repo.find(vm.id).state)

    async def _pause(self, handles: VmHandles | None) -> bool:
        if handles is None or not isinstance(self.mgr.backend, Pauser):
            return False
        await self.mgr.backend.pause(handles)
        return True

    async def _unpause(self, vm: VmRecord, handles: VmHandles) -> None:
        assert isinstance(self.mgr.backend, Pauser)
        try:
            await self.mgr.backend.unpause(handles)
        except BangerError as exc:  # the restore's own error is the one to report
            log.warning("VM %s stays paused after a failed restore: %s", vm.name, exc.message)

    async def _put_back(self, vm: VmRecord, meta: SnapshotMeta, running: bool,
                        touched: _Touched) -> None:
        """Stop the VM and give it a new disk on the checkpoint's, and its memory to resume.
        The disk is made aside first: if that fails the VM has not been touched."""
        vm_dir = self.mgr.paths.vm_dir(vm.id)
        scratch = self._dir(vm) / f".restore-{secrets.token_hex(4)}"
        scratch.mkdir()
        try:
            spec = dataclasses.replace((await self.mgr.boot_inputs(vm, lambda *_: None))[0],
                                       vm_dir=scratch)
            assert isinstance(self.mgr.backend, Snapshotter)  # every Checkpointer is one
            await self.mgr.backend.prepare_disk_on(spec, self.mgr.templates.disks / meta.disk,
                                                   meta.disk_mib)
            touched.vm = True  # from here a failure may have lost the VM's current state
            if running:
                await self.mgr.cleanup(vm)  # its state is in the automatic checkpoint, if wanted
                self.mgr.repo.set_state(vm.id, VmState.STOPPED)
            drop_saved_state(self.mgr.backend, vm_dir)
            disk = self.mgr.backend.disk_path(vm_dir)
            os.replace(self.mgr.backend.disk_path(scratch), disk)  # its backing path is absolute
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if meta.memory:  # resumed by the next start, which then drops it (the link)
            with contextlib.suppress(FileNotFoundError):
                os.link(self._dir(vm) / meta.name / checkpoints.MEMORY, saved_state(vm_dir))
        self.mgr.repo.update(vm.id, disk_mib=meta.disk_mib, workspace=meta.workspace)
        self.mgr.templates.collect_disks()
