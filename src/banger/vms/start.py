"""Choose how a VM starts: resume its own saved state, restore a template, or boot cold."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

from banger.agent.client import AgentClient
from banger.artifacts import ImageFiles, KernelFiles
from banger.errors import BangerError
from banger.progress import Progress
from banger.vmm.base import Backend, Snapshotter, VmHandles, VmSpec
from banger.vms import events
from banger.vms.coldboot import boot
from banger.vms.restore import drop_saved_state, grow_root, personalise_clone, restore, saved_state
from banger.vms.templates import TemplateKey, Templates

log = logging.getLogger("banger.vms.start")
Started = tuple[VmHandles, AgentClient]
Setup = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Clone:
    """Saved state new VMs restore and re-personalise: a template's, or a running VM's (a fork)."""

    disk: Path  # the frozen base disk each clone's disk is a layer on
    memory: Path  # device state, and memory unless ram
    ram: Path | None  # guest RAM, mapped copy-on-write by every clone
    disk_mib: int  # the base disk's size: a larger VM grows its root online
    origin: str  # for the VM's events: "template ID", "a fork of VM"
    has: tuple[str, ...] = ()  # setup keys the saved guest already has (a fork: git_identity)


def template_key(spec: VmSpec, image: ImageFiles, kernel: KernelFiles, backend: Backend) -> TemplateKey:
    assert isinstance(backend, Snapshotter)
    return TemplateKey(image.name, image.manifest.sha256, kernel.name, kernel.digest, backend.name,
                       backend.state_version(), spec.vcpu, spec.memory_mib, spec.disk_mib,
                       spec.accel, spec.network is not None)


def has_sshd(image: ImageFiles) -> bool:
    return bool(image.manifest.has_package("openssh-server"))


class StartPath:
    """Picks and runs one of the three start paths: saved state, template restore, cold boot."""

    def __init__(self, backend: Backend, templates: Templates, *, fast_start: bool) -> None:
        self.backend = backend
        self.templates = templates
        self.fast_start = fast_start and isinstance(backend, Snapshotter)

    async def launch(self, spec: VmSpec, image: ImageFiles, kernel: KernelFiles,
                     progress: Progress, *, cold: bool, setup: Setup,
                     clone: Clone | None = None) -> Started:
        """Start the VM and apply setup (agent `configure` arguments) in the first call.
        clone: restore this saved state as a new machine (a fork); no fallback."""
        if clone is not None:
            setup = {key: value for key, value in setup.items() if key not in clone.has}
            forked = await self._restore_clone(spec, clone, progress)
            await self._personalise(spec, image, clone, forked, setup)
            return forked
        if cold:
            drop_saved_state(self.backend, spec.vm_dir)  # --cold: the user chose the disk
        if saved_state(spec.vm_dir).exists():
            started = await self._resume_saved(spec, progress, setup)
            if started is not None:
                return started
        if self.fast_start and not cold and not self.backend.disk_path(spec.vm_dir).exists():
            started = await self._from_template(spec, image, kernel, progress, setup)
            if started is not None:
                return started
        handles, agent = await boot(self.backend, spec, progress)
        try:
            await agent.configure(clock=time.time(), **setup)
        except BaseException:
            await _undo(self.backend, spec, handles, agent)
            raise
        return handles, agent

    async def _resume_saved(self, spec: VmSpec, progress: Progress, setup: Setup) -> Started | None:
        state = saved_state(spec.vm_dir)
        try:
            handles, agent = await restore(self.backend, dataclasses.replace(spec, incoming=state),
                                           progress)
        except BangerError as exc:
            events.record(spec.vm_dir, f"resuming the saved state failed ({exc.message}); "
                                       "booting cold from the VM's disk")
            progress("boot", None, "saved state unusable; booting cold")
            return None
        finally:
            drop_saved_state(self.backend, spec.vm_dir)  # the disk moves on: state is single-use
        # A running restored VM must never be followed by a cold boot on the same disk.
        await agent.configure(clock=time.time(), **setup)  # on failure the caller's cleanup kills it
        events.record(spec.vm_dir, "resumed from its saved state")
        return handles, agent

    async def _from_template(self, spec: VmSpec, image: ImageFiles, kernel: KernelFiles,
                             progress: Progress, setup: Setup) -> Started | None:
        key = template_key(spec, image, kernel, self.backend)
        assert isinstance(self.backend, Snapshotter)
        try:
            info = await self.templates.ensure(key, spec, progress)
        except BangerError as exc:
            events.record(spec.vm_dir, f"building a template failed ({exc.message}); booting cold")
            return None
        clone = Clone(self.templates.disk(info), self.templates.memory(info),
                      self.templates.ram(info), info.disk_mib, f"template {info.id}")
        try:
            started = await self._restore_clone(spec, clone, progress)
        except BangerError as exc:
            # Unusable (corrupt, foreign QEMU): rebuild next time; a racing start may have already.
            self.templates.remove(info.id, missing_ok=True)
            events.record(spec.vm_dir, f"restoring template {info.id} failed ({exc.message}); "
                                       "booting cold")
            progress("boot", None, "template unusable; booting cold")
            return None
        await self._personalise(spec, image, clone, started, setup)
        return started

    async def _restore_clone(self, spec: VmSpec, clone: Clone, progress: Progress) -> Started:
        """The VM's disk as a new layer on the clone's, then its saved state restored."""
        assert isinstance(self.backend, Snapshotter)
        try:
            spec.vm_dir.mkdir(parents=True, exist_ok=True)
            await self.backend.prepare_disk_on(spec, clone.disk, None)
            incoming = dataclasses.replace(spec, incoming=clone.memory, memory_file=clone.ram)
            return await restore(self.backend, incoming, progress)
        except BaseException:
            self._forget(spec)
            raise

    async def _personalise(self, spec: VmSpec, image: ImageFiles, clone: Clone, started: Started,
                           setup: Setup) -> None:
        """A restored clone gets its own identity before anything else runs."""
        handles, agent = started
        try:
            t0 = time.monotonic()
            await personalise_clone(agent, spec.name, setup, has_sshd=has_sshd(image))
            t1 = time.monotonic()
            if spec.disk_mib > clone.disk_mib:
                await grow_root(self.backend, agent, handles, spec.disk_mib)
            log.debug("clone: personalise %.3fs, grow %.3fs", t1 - t0, time.monotonic() - t1)
        except BaseException:
            await _undo(self.backend, spec, handles, agent)
            self._forget(spec)
            raise
        events.record(spec.vm_dir, f"started from {clone.origin}")

    def _forget(self, spec: VmSpec) -> None:
        """Drop a disk layered on a template, so the next start can boot cold from the image."""
        self.backend.disk_path(spec.vm_dir).unlink(missing_ok=True)


async def _undo(backend: Backend, spec: VmSpec, handles: VmHandles, agent: AgentClient) -> None:
    await agent.close()
    await backend.kill(handles)
    VmHandles.clear(spec.vm_dir)
