"""Daemon-level methods: ping, status, shutdown."""

from __future__ import annotations

import asyncio
import time

import msgspec

from banger import __version__
from banger.daemon.context import Context
from banger.daemon.registry import NoParams, method


class Status(msgspec.Struct):
    version: str
    pid: int
    uptime_s: float
    socket: str
    state_dir: str
    schema_version: int


@method("ping", NoParams)
async def ping(ctx: Context, _: NoParams) -> dict[str, str]:
    return {"pong": "ok", "version": __version__}


@method("daemon.status", NoParams)
async def status(ctx: Context, _: NoParams) -> Status:
    d = ctx.daemon
    return Status(__version__, d.pid, round(time.time() - d.started_at, 1), str(d.paths.socket),
                  str(d.paths.state_dir), d.store.schema_version())


@method("daemon.shutdown", NoParams)
async def shutdown(ctx: Context, _: NoParams) -> dict[str, int]:
    # Reply first, then stop: the caller gets an answer before the socket disappears.
    asyncio.get_running_loop().call_later(0.05, ctx.daemon.shutdown.set)
    return {"pid": ctx.daemon.pid}


class SleepParams(msgspec.Struct, forbid_unknown_fields=True):
    seconds: float = 1.0
    steps: int = 4


@method("debug.sleep", SleepParams, long=True)
async def debug_sleep(ctx: Context, p: SleepParams) -> dict[str, float]:
    """A long operation with progress, used to test streaming and cancellation."""
    for i in range(p.steps):
        ctx.progress("sleeping", i / p.steps, f"step {i + 1}/{p.steps}")
        await asyncio.sleep(p.seconds / p.steps)
    ctx.progress("sleeping", 1.0, "done")
    return {"slept": p.seconds}
