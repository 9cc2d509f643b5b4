"""Start a VM by restoring saved state: from a template, or from its own `vm stop --save`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from pathlib import Path
from typing import Any

from banger.agent.client import AgentClient
from banger.progress import Progress
from banger.ssh.keys import new_host_key
from banger.vmm.base import Backend, Snapshotter, VmHandles, VmSpec
from banger.vms.coldboot import Watchdog, connect_agent

log = logging.getLogger("banger.vms.restore")
RESTORE_TIMEOUT = 20.0


def saved_state(vm_dir: Path) -> Path:
    return vm_dir / "memory.snap"


def drop_saved_state(backend: Backend, vm_dir: Path) -> None:
    """Delete a VM's `vm stop --save` state, every file of it."""
    state = saved_state(vm_dir)
    for path in backend.state_files(state) if isinstance(backend, Snapshotter) else (state,):
        path.unlink(missing_ok=True)


async def restore(backend: Backend, spec: VmSpec, progress: Progress) -> tuple[VmHandles, AgentClient]:
    """Launch the VMM on spec.incoming, resume it and reconnect the agent; undo all on failure."""
    assert spec.incoming is not None and isinstance(backend, Snapshotter)
    async with contextlib.AsyncExitStack() as undo:
        progress("restore", None, f"restoring {spec.incoming.name}")
        t0 = time.monotonic()
        handles = await backend.start(spec)
        undo.push_async_callback(backend.kill, handles)
        handles.save(spec.vm_dir)
        undo.callback(VmHandles.clear, spec.vm_dir)
        t1 = time.monotonic()
        await backend.resume(handles, RESTORE_TIMEOUT)
        t2 = time.monotonic()
        agent = await connect_agent(backend, handles, Watchdog(backend, handles, spec, RESTORE_TIMEOUT))
        log.debug("restore: launch %.3fs, load+resume %.3fs, agent %.3fs", t1 - t0, t2 - t1,
                  time.monotonic() - t2)
        undo.pop_all()
        return handles, agent
    raise AssertionError("unreachable")  # pragma: no cover


async def personalise_clone(agent: AgentClient, name: str, setup: dict[str, Any], *,
                            has_sshd: bool) -> None:
    """A restored template is a clone: give it its own identity before anything else runs;
    setup (network, keys, ...) rides in the same agent call. A new ssh host key too: never
    shared between VMs."""
    host_key = await new_host_key(f"root@{name}") if has_sshd else None
    await agent.configure(hostname=name, machine_id=secrets.token_hex(16),
                          entropy=secrets.token_bytes(64), clock=time.time(),
                          ssh_host_key=host_key, **setup)


async def grow_root(backend: Backend, agent: AgentClient, handles: VmHandles, disk_mib: int) -> None:
    """The clone's disk is the template's size: grow the device, then the filesystem, online."""
    assert isinstance(backend, Snapshotter)
    await backend.grow_live(handles, disk_mib)
    for _ in range(50):  # the guest kernel applies the new capacity asynchronously
        proc = await agent.exec(shell="resize2fs /dev/vda 2>&1")
        out, _, status = await proc.communicate()
        if status.code == 0 and b"Nothing to do" not in out:
            return
        await asyncio.sleep(0.02)
    log.warning("the root filesystem did not grow to %d MiB", disk_mib)
