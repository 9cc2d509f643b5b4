"""Firecracker snapshots: pause + `/snapshot/create`, and `/snapshot/load` into a fresh process.

A saved state is two files (`plan.state_files`): guest memory at the path the core names and
the device state beside it. The device state records the drive and vsock paths the VM was
booted with; those are cwd- or chroot-relative (`plan.Layout`), so each restoring VM opens its
own disk and binds its own vsock socket. Only the tap is named absolutely, hence
`network_overrides`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from banger.durable import fsync_path
from banger.errors import InvalidArgument, NotFound, OperationFailed
from banger.vmm.base import VmSpec
from banger.vmm.firecracker.api import ApiCall, FirecrackerApi
from banger.vmm.firecracker.plan import (
    GUEST_IFACE,
    JAIL_FILES,
    ROOT_DRIVE,
    Layout,
    disk_path,
    observability_calls,
    state_files,
)
from banger.vmm.firecracker.version import BinaryProbe

MIB = 1024 * 1024
SAVE_TIMEOUT = 120.0  # writing a multi-GiB memory file
# `network_overrides` on /snapshot/load (a restored VM on its own tap) arrived in 1.12.0.
NETWORK_OVERRIDES_SINCE = (1, 12, 0)


def check_restore(spec: VmSpec, binary: BinaryProbe) -> None:
    """Refuse, in one line and before anything runs, a restore that cannot work."""
    assert spec.incoming is not None
    memory, vmstate = state_files(spec.incoming)
    for path, what in ((memory, "memory file"), (vmstate, "device state file")):
        if not path.is_file():
            raise NotFound(f"saved state {memory.name} has no {what} ({path}); boot the VM cold")
    have, want = memory.stat().st_size, spec.memory_mib * MIB
    if have < want:
        raise OperationFailed(f"saved memory {memory} is truncated ({have} of {want} bytes); "
                              "boot the VM cold")
    if not disk_path(spec.vm_dir).is_file():
        raise NotFound(f"the VM has no root disk {disk_path(spec.vm_dir)} to restore onto")
    if spec.network is not None and (binary.version or (0, 0, 0)) < NETWORK_OVERRIDES_SINCE:
        raise InvalidArgument(
            f"restoring a VM with a network interface needs firecracker >= 1.12.0 "
            f"(network_overrides), not {binary.version_text}; upgrade it or boot cold")


def restore_calls(layout: Layout) -> list[ApiCall]:
    """Firecracker's documented restore: only logger and metrics before the load; no resume."""
    spec = layout.spec
    load: dict[str, object] = {
        "snapshot_path": layout.state_vmstate,
        "mem_backend": {"backend_type": "File", "backend_path": layout.state_memory},
        "resume_vm": False,
    }
    if spec.network is not None:
        load["network_overrides"] = [{"iface_id": GUEST_IFACE,
                                      "host_dev_name": spec.network.tap}]
    return [*observability_calls(layout), ApiCall("PUT", "/snapshot/load", load)]


def pause_call() -> ApiCall:
    return ApiCall("PATCH", "/vm", {"state": "Paused"})


def resume_call() -> ApiCall:
    return ApiCall("PATCH", "/vm", {"state": "Resumed"})


def rescan_call(drive_api_path: str) -> ApiCall:
    """Post-boot drive PATCH: Firecracker re-reads the file's size and tells the guest."""
    return ApiCall("PATCH", f"/drives/{ROOT_DRIVE}",
                   {"drive_id": ROOT_DRIVE, "path_on_host": drive_api_path})


@dataclass(frozen=True)
class SaveTarget:
    """One file of a save: where Firecracker writes it (API path, and that file on the host)
    and its final name."""

    api_path: str
    written: Path
    final: Path

    @property
    def part(self) -> Path:
        return self.final.with_name(self.final.name + ".part")


def save_targets(dest: Path, chroot: Path | None) -> tuple[SaveTarget, SaveTarget]:
    """(memory, vmstate): written under `.part` names, or inside the chroot with the jailer."""
    targets = []
    for role, final in zip(("memory", "vmstate"), state_files(dest), strict=True):
        if chroot is None:
            part = final.with_name(final.name + ".part")
            targets.append(SaveTarget(str(part), part, final))
        else:
            name = JAIL_FILES[role] + ".part"
            targets.append(SaveTarget(f"/{name}", chroot / name, final))
    return targets[0], targets[1]


def create_call(memory: SaveTarget, vmstate: SaveTarget) -> ApiCall:
    return ApiCall("PUT", "/snapshot/create", {"snapshot_type": "Full",
                                               "snapshot_path": vmstate.api_path,
                                               "mem_file_path": memory.api_path})


async def save(socket: str, dest: Path, chroot: Path | None) -> None:
    """Pause, write a full snapshot, then give the files their names: device state first,
    memory (the name the core checks) last, so dest never names half a state."""
    memory, vmstate = save_targets(dest, chroot)
    for target in (memory, vmstate):  # an older pair must never meet half of a new one
        target.final.unlink(missing_ok=True)
    try:
        async with FirecrackerApi(socket, timeout=SAVE_TIMEOUT) as api:
            await api.call(pause_call())
            await api.call(create_call(memory, vmstate))
        for target in (memory, vmstate):
            if not target.written.is_file() or target.written.stat().st_size == 0:
                raise OperationFailed(f"firecracker wrote no {target.final.name} while saving the "
                                      "VM state; check free disk space")
        await asyncio.to_thread(_commit, (vmstate, memory))
    except BaseException:
        for target in (memory, vmstate):
            target.written.unlink(missing_ok=True)
            target.part.unlink(missing_ok=True)
        with contextlib.suppress(Exception):  # nothing saved: the guest runs on
            async with FirecrackerApi(socket) as api:
                await api.call(resume_call())
        raise


def _commit(targets: tuple[SaveTarget, ...]) -> None:
    for target in targets:
        if target.written != target.part:  # out of the chroot (a copy across filesystems)
            shutil.move(target.written, target.part)
        fsync_path(target.part)
        os.replace(target.part, target.final)
    fsync_path(targets[-1].final.parent)


def grow_raw(image: Path, size_mib: int) -> None:
    """Grow a raw disk file, not its filesystem: a restored guest has it mounted."""
    size = size_mib * MIB
    if image.stat().st_size > size:
        raise InvalidArgument(f"the root disk is already larger than {size_mib} MiB; disks only "
                              "grow")
    os.truncate(image, size)
