"""Live checkpoints: at one paused instant the VM's own disk layer is copied (a frozen base that
restores and forks layer on) and its memory and device state stream to a file (`migrate`); then
the guest runs on. Also: a saved state turned into a RAM file plus device state, the layout
template clones map copy-on-write (forks use it)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from banger.runner import arun
from banger.vmm.qemu.snapshot import (
    CAPABILITIES,
    FULL_CAPABILITIES,
    connect,
    execute,
    resume,
    save,
    stream_to,
)

LOAD_TIMEOUT = 120.0  # a full memory image of a large guest, read from disk


async def copy_layer(disk: Path, dest: Path) -> None:
    """A read-only copy of the VM's own qcow2 layer (same backing file), made whole or not at
    all. A copy, not a rename: a running QEMU reopens its files by name."""
    tmp = dest.with_name(dest.name + ".part")
    try:
        await arun(["cp", "--sparse=always", "--reflink=auto", disk, tmp], what="copying the disk")
        tmp.chmod(0o444)
        tmp.replace(dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


async def live(socket: str, disk: Path, dest: Path, state: Path | None, *,
               for_sharing: bool = False) -> None:
    """Pause (QEMU flushes the disk), copy the disk's layer to dest, save memory to state (when
    given), resume unless it was paused before. On failure the guest runs on and neither dest
    nor state is left behind.
    for_sharing: a stream `share` loads (no x-ignore-shared), not one a VM resumes from."""
    client = await connect(socket)
    was_running = False  # until known: a failure must not run a guest that was paused
    try:
        was_running = (await execute(client, "query-status")).get("running") is not False
        await execute(client, "stop")
        await copy_layer(disk, dest)
        if state is not None:
            await stream_to(client, state, FULL_CAPABILITIES if for_sharing else CAPABILITIES,
                            resume_on_failure=was_running)
        if was_running:  # a paused one stays so: a restore pauses before its automatic checkpoint
            await execute(client, "cont")
    except BaseException:
        dest.unlink(missing_ok=True)
        if was_running:
            with contextlib.suppress(Exception):
                await client.execute("cont")
        raise
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()


async def share(socket: str, incoming: Path, state: Path, alive: Callable[[], bool]) -> None:
    """In a QEMU launched on `incoming` with its RAM a shared file map: load the full state
    into that file, then save the device state alone (x-ignore-shared leaves the file out)."""
    await resume(socket, incoming, LOAD_TIMEOUT, alive, run=False, capabilities=FULL_CAPABILITIES)
    await save(socket, state)
