"""QEMU memory snapshots: `migrate` to a file and `-incoming` from it (see HOST-NOTES)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import shlex
import time
from pathlib import Path
from typing import Any

from banger.errors import OperationFailed
from banger.runner import run

MIGRATE_TIMEOUT = 120.0


@functools.cache
def qemu_version() -> str:
    out = run(["qemu-system-x86_64", "--version"], timeout=10).stdout
    return out.splitlines()[0].strip() if out else "unknown"


def incoming_uri(path: Path) -> str:
    return f"exec:cat {shlex.quote(str(path))}"


async def _client(socket: str) -> Any:
    from qemu.qmp import QMPClient

    client = QMPClient("banger-snapshot")
    await asyncio.wait_for(client.connect(socket), 5.0)
    return client


async def save(socket: str, dest: Path) -> None:
    """Stop the guest and stream its state into dest; a partial file never takes dest's name."""
    part = dest.with_name(dest.name + ".part")
    part.unlink(missing_ok=True)
    client = await _client(socket)
    try:
        await client.execute("stop")
        await client.execute("migrate", {"uri": f"exec:cat > {shlex.quote(str(part))}"})
        deadline = time.monotonic() + MIGRATE_TIMEOUT
        while True:
            status = (await client.execute("query-migrate")).get("status")
            if status == "completed":
                break
            if status in ("failed", "cancelled") or time.monotonic() > deadline:
                info = await client.execute("query-migrate")
                raise OperationFailed(
                    f"saving VM state failed ({status}): {info.get('error-desc', 'no detail')}; "
                    "check free disk space")
            await asyncio.sleep(0.02)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()
    part.replace(dest)


async def resume(socket: str, timeout: float) -> None:
    """Wait until the incoming state is loaded (status paused), then continue the guest."""
    deadline = time.monotonic() + timeout
    client = None
    while client is None:
        try:
            client = await _client(socket)
        except (OSError, TimeoutError) as exc:
            if time.monotonic() > deadline:
                raise OperationFailed(f"restored QEMU never opened QMP: {exc}") from exc
            await asyncio.sleep(0.01)
    try:
        while True:
            status = (await client.execute("query-status")).get("status")
            if status in ("paused", "postmigrate", "prelaunch"):
                await client.execute("cont")
                return
            if status == "running":
                return
            if time.monotonic() > deadline:
                raise OperationFailed(f"restoring VM state did not finish (status {status})")
            await asyncio.sleep(0.005)
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()
