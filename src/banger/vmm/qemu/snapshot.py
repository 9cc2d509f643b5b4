"""QEMU memory snapshots: `migrate` to a file and `-incoming` from it (see HOST-NOTES)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from banger.durable import NEW_FILE
from banger.errors import OperationFailed
from banger.runner import run

MIGRATE_TIMEOUT = 120.0
FD_NAME = "banger-state"  # the state file's fd in QEMU (getfd), taken by the migrate
# Shared (template) RAM stays in its file instead of the stream; set on both sides, always,
# because QEMU refuses a stream whose x-ignore-shared differs from the loader's.
CAPABILITIES = [{"capability": "x-ignore-shared", "state": True}]
# A full stream meant to be loaded into shared RAM (a fork's): the loader must not ignore it.
FULL_CAPABILITIES = [{"capability": "x-ignore-shared", "state": False}]


@functools.cache
def qemu_version() -> str:
    out = run(["qemu-system-x86_64", "--version"], timeout=10).stdout
    return out.splitlines()[0].strip() if out else "unknown"


def incoming_uri(path: Path) -> str:
    return f"exec:cat {shlex.quote(str(path))}"


async def connect(socket: str) -> Any:
    from qemu.qmp import QMPClient

    client = QMPClient("banger-snapshot")
    try:
        await asyncio.wait_for(client.connect(socket), 5.0)
    except Exception as exc:  # qemu.qmp has its own error hierarchy; a dying QEMU resets
        raise OperationFailed(f"cannot talk to QEMU over QMP: {exc}") from exc
    return client


async def execute(client: Any, command: str, args: dict[str, Any] | None = None) -> Any:
    try:
        return await client.execute(command, args)
    except Exception as exc:
        raise OperationFailed(f"QMP {command} failed: {exc}") from exc


async def save(socket: str, dest: Path) -> None:
    """Stop the guest and stream its state into dest; a partial file never takes dest's name.
    On failure the migration is cancelled and the guest runs on."""
    client = await connect(socket)
    try:
        await execute(client, "stop")
        await stream_to(client, dest, CAPABILITIES)
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()


async def stream_to(client: Any, dest: Path, capabilities: list[dict[str, Any]], *,
                    resume_on_failure: bool = True) -> None:
    """Stream the stopped guest's state into a file this process opens (O_EXCL, no link
    followed, 0600) and hands to QEMU: an `exec:cat > PATH` showed the name in every user's
    `ps` and wrote through a planted file or link. On failure nothing is left at dest."""
    part = dest.with_name(dest.name + ".part")
    fd = -1
    try:
        part.unlink(missing_ok=True)
        try:
            fd = os.open(part, NEW_FILE, 0o600)
        except OSError as exc:
            raise OperationFailed(f"cannot create the state file {part}: {exc.strerror}") \
                from None
        await execute(client, "migrate-set-capabilities", {"capabilities": capabilities})
        await execute(client, "migrate-set-parameters", {"max-bandwidth": 8 << 30})
        try:
            client.send_fd_scm(fd)
        except Exception as exc:  # qemu.qmp's own errors, or the socket's
            raise OperationFailed(f"cannot pass the state file to QEMU: {exc}") from exc
        await execute(client, "getfd", {"fdname": FD_NAME})
        os.close(fd)  # QEMU holds its own copy now
        fd = -1
        await execute(client, "migrate", {"uri": f"fd:{FD_NAME}"})
        await wait_migration(client)
        try:
            part.replace(dest)
        except OSError as exc:
            raise OperationFailed(f"cannot name the saved state {dest}: {exc.strerror}") from exc
    except BaseException:
        part.unlink(missing_ok=True)
        with contextlib.suppress(Exception):  # not taken by a migrate: QEMU keeps it till closed
            await client.execute("closefd", {"fdname": FD_NAME})
        with contextlib.suppress(Exception):
            await cancel_migration(client, resume=resume_on_failure)
        raise
    finally:
        if fd >= 0:
            os.close(fd)


async def wait_migration(client: Any) -> None:
    deadline = time.monotonic() + MIGRATE_TIMEOUT
    while True:
        info = await execute(client, "query-migrate")
        status = info.get("status")
        if status == "completed":
            return
        if status in ("failed", "cancelled"):
            raise OperationFailed(f"saving VM state failed: {info.get('error-desc', 'no detail')}; "
                                  "check free disk space")
        if time.monotonic() > deadline:
            raise OperationFailed(f"saving VM state took longer than {MIGRATE_TIMEOUT:.0f}s; "
                                  "check the disk holding banger's state")
        await asyncio.sleep(0.02)


async def cancel_migration(client: Any, *, resume: bool) -> None:
    """A still-running migration would stop the guest again when it ends: cancel it first,
    then let the guest run again when it ran before."""
    await client.execute("migrate_cancel")
    deadline = time.monotonic() + 10.0
    while (await client.execute("query-migrate")).get("status") in ("active", "setup",
                                                                     "cancelling"):
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    if resume:
        await client.execute("cont")


async def resume(socket: str, incoming: Path, timeout: float, alive: Callable[[], bool], *,
                 run: bool = True, capabilities: list[dict[str, Any]] = CAPABILITIES) -> None:
    """Stream the saved state into a QEMU started with `-incoming defer`, wait until it is
    loaded (status paused), then continue the guest (unless run is False)."""
    deadline = time.monotonic() + timeout
    client = None
    while client is None:
        try:
            client = await connect(socket)
        except OperationFailed as exc:
            if not alive():
                raise OperationFailed("QEMU exited while loading the saved state (corrupt, or "
                                      "from another QEMU build)") from exc
            if time.monotonic() > deadline:
                raise OperationFailed(f"restored QEMU never answered: {exc.message}") from exc
            await asyncio.sleep(0.01)
    try:
        await execute(client, "migrate-set-capabilities", {"capabilities": capabilities})
        await execute(client, "migrate-incoming", {"uri": incoming_uri(incoming)})
        while True:
            status = (await execute(client, "query-status")).get("status")
            if status in ("paused", "postmigrate", "prelaunch"):
                if run:
                    await execute(client, "cont")
                return
            if status == "running":
                return
            if time.monotonic() > deadline:
                raise OperationFailed(f"restoring VM state did not finish (status {status})")
            await asyncio.sleep(0.005)
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()
