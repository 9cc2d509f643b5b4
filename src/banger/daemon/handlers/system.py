"""Daemon-level methods: ping, status, shutdown, the operations history."""

from __future__ import annotations

import asyncio
import time

from banger import __version__
from banger.daemon.context import Context
from banger.daemon.operations_repo import OperationRecord, OperationRepo
from banger.daemon.registry import method
from banger.errors import InvalidArgument
from banger.rpc.methods import NoParams
from banger.rpc.methods.system import (
    DAEMON_OPERATIONS,
    DAEMON_SHUTDOWN,
    DAEMON_STATUS,
    MAX_OPERATIONS,
    PING,
    OperationsParams,
    Pong,
    ShutdownResult,
    Status,
)


@method(PING)
async def ping(ctx: Context, _: NoParams) -> Pong:
    return Pong("ok", __version__)


@method(DAEMON_STATUS)
async def status(ctx: Context, _: NoParams) -> Status:
    d = ctx.daemon
    return Status(__version__, d.pid, round(time.time() - d.started_at, 1), str(d.paths.socket),
                  str(d.paths.state_dir), d.store.schema_version())


@method(DAEMON_SHUTDOWN)
async def shutdown(ctx: Context, _: NoParams) -> ShutdownResult:
    # Reply first, then stop: the caller gets an answer before the socket disappears.
    asyncio.get_running_loop().call_later(0.05, ctx.daemon.shutdown.set)
    return ShutdownResult(ctx.daemon.pid)


@method(DAEMON_OPERATIONS)
async def operations(ctx: Context, p: OperationsParams) -> list[OperationRecord]:
    if not 0 < p.limit <= MAX_OPERATIONS:
        raise InvalidArgument(f"invalid limit {p.limit}: use 1..{MAX_OPERATIONS}")
    return OperationRepo(ctx.daemon.store).recent(p.limit)
