"""Reconcile VMs with reality on daemon start, then watch for VMMs that die."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from banger.errors import BangerError
from banger.logfiles import rotate
from banger.vmm.base import VmHandles
from banger.vms.coldboot import console_tail
from banger.vms.manager import VmManager, net_view
from banger.vms.model import VmRecord, VmState
from banger.vms.owner import Owner, alive

log = logging.getLogger("banger.vms.monitor")
ACTIVE = (VmState.STARTING, VmState.RUNNING, VmState.STOPPING)
# A guest can print without end: past this the newest part moves to console.log.1 (docs/vms.md).
CONSOLE_CAP = 4 << 20


async def reconcile(mgr: VmManager) -> None:
    """Re-adopt VMs whose VMM still runs; clean up and mark stopped the others."""
    await mgr.pool.reap()  # pooled clones of a previous daemon are not VMs
    for vm in mgr.repo.all():
        if vm.state not in ACTIVE:
            continue
        handles = VmHandles.load(mgr.paths.vm_dir(vm.id))
        if vm.state == VmState.RUNNING and handles and mgr.backend.is_alive(handles):
            log.info("re-adopted VM %s (pid %d); its agent reconnects on first use", vm.name,
                     handles.pid)
            try:  # NAT rules and proxied forwards die with the daemon: renew them
                await mgr.net.activate(net_view(vm))
            except BangerError as exc:  # the VM runs on; its forwards are what failed
                log.warning("VM %s: renewing its network failed: %s", vm.name, exc.message)
            continue
        await mgr.cleanup(vm)
        mgr.repo.set_state(vm.id, VmState.STOPPED,
                           error=f"was {vm.state} when the daemon restarted; its VMM was gone")
        log.info("VM %s was %s but its VMM is gone: marked stopped", vm.name, vm.state)
    await reconcile_owners(mgr)


def owner_of(vm: VmRecord) -> Owner | None:
    if vm.owner_pid is None or vm.owner_start is None:
        return None
    return Owner(vm.owner_pid, vm.owner_start)


async def reconcile_owners(mgr: VmManager) -> None:
    """`vm run --rm` VMs: delete those whose client exited while no daemon watched; watch the
    others again."""
    for vm in mgr.repo.all():
        owner = owner_of(vm)
        if owner is None:
            continue
        if alive(owner):
            mgr.owners.watch(vm.id, owner)
            log.info("VM %s: watching its owner (pid %d) again", vm.name, owner.pid)
        else:
            await mgr.owner_gone(vm.id)


async def watch(mgr: VmManager, interval: float = 1.0) -> None:
    """Mark running VMs whose VMM died (kill -9, crash, guest poweroff) stopped or error, and
    keep every live VM's console log under CONSOLE_CAP."""
    while True:
        await asyncio.sleep(interval)
        for vm in mgr.repo.all():
            if vm.state in ACTIVE:
                rotate_console(mgr.paths.vm_dir(vm.id) / "console.log")
            if vm.state != VmState.RUNNING or mgr.lock(vm.id).locked():
                continue
            handles = VmHandles.load(mgr.paths.vm_dir(vm.id))
            if handles and mgr.backend.is_alive(handles):
                continue
            await _mark_dead(mgr, vm.id)


def rotate_console(path: Path) -> None:
    try:
        if rotate(path, CONSOLE_CAP):
            log.info("rotated %s (over %d MiB)", path, CONSOLE_CAP >> 20)
    except OSError as exc:  # a full disk must not stop the watcher
        log.warning("could not rotate %s: %s", path, exc)


async def _mark_dead(mgr: VmManager, vm_id: str) -> None:
    async with mgr.lock(vm_id):
        vm = mgr.repo.find(vm_id)
        handles = VmHandles.load(mgr.paths.vm_dir(vm.id))
        if vm.state != VmState.RUNNING or (handles and mgr.backend.is_alive(handles)):
            return
        tail = console_tail(mgr.paths.vm_dir(vm.id) / "console.log", 2)
        powered_off = "reboot: Power down" in tail or "System halted" in tail
        await mgr.cleanup(vm)
        if powered_off:
            mgr.repo.set_state(vm.id, VmState.STOPPED)
            log.info("VM %s powered itself off", vm.name)
        else:
            mgr.repo.set_state(vm.id, VmState.ERROR,
                               error=f"{mgr.backend.name} exited unexpectedly; last console lines: {tail}")
            log.warning("VM %s: %s exited unexpectedly", vm.name, mgr.backend.name)
