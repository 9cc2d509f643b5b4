"""session.*: guest-owned sessions. The guest agent owns them; the daemon relays and keeps nothing,
so a daemon restart (or kill -9) loses no session and no output."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import msgspec

from banger.agent.process import PtySpec
from banger.agent.sessions import (
    SessionInfo,
    Sessions,
    SessionStream,
    StartSpec,
    check_name,
    final_state,
    logs_answer,
)
from banger.daemon.context import Context
from banger.daemon.registry import method
from banger.errors import BangerError, InvalidArgument
from banger.rpc.methods.session import (
    SESSION_ATTACH,
    SESSION_KILL,
    SESSION_LIST,
    SESSION_LOGS,
    SESSION_RM,
    SESSION_SEND,
    SESSION_SHOW,
    SESSION_START,
    SESSION_STOP,
    SessionAttachParams,
    SessionAttachResult,
    SessionListParams,
    SessionLogsParams,
    SessionLogsResult,
    SessionRef,
    SessionRmParams,
    SessionRow,
    SessionSendParams,
    SessionSendResult,
    SessionStartParams,
    SessionStopParams,
)
from banger.vms.model import VmRecord, VmState
from banger.workspace import record_cwd

log = logging.getLogger("banger.sessions")

MIN_LOG_CAP, MAX_LOG_CAP = 4096, 1024 * 1024 * 1024
MAX_SEND = 16 * 1024 * 1024  # one `session send`; larger input belongs in a file
SIGTERM, SIGKILL = 15, 9


def row(vm: str, info: SessionInfo) -> SessionRow:
    """The host's record, built from the typed fields only."""
    return SessionRow(vm=vm, name=info.name, state=info.state, argv=list(info.argv), cwd=info.cwd,
                      tty=info.tty, pid=info.pid, started=info.started, ended=info.ended,
                      exit_code=info.exit_code, signal=info.signal, lost=info.lost,
                      log_start=info.log_start, log_end=info.log_end, log_cap=info.log_cap)


def default_cwd(vm: VmRecord) -> str | None:
    """Like `vm exec`: the workspace dir when the VM has one."""
    return record_cwd(vm.workspace)


async def sessions_of(ctx_daemon: Any, vm_ref: str) -> list[dict[str, Any]]:
    """A running VM's sessions as plain rows, for `vm show`; [] when it has none or the agent
    cannot tell (the VM is not running, or its agent is older)."""
    try:
        vm, agent = await ctx_daemon.vms.agent_for(vm_ref)
        infos = await Sessions(agent).list(timeout=5.0)
    except BangerError as e:
        log.debug("no sessions for %s: %s", vm_ref, e)
        return []
    return [msgspec.to_builtins(row(vm.name, info)) for info in infos]


@method(SESSION_START)
async def session_start(ctx: Context, p: SessionStartParams) -> SessionRow:
    if not p.argv:
        raise InvalidArgument("give the session's command after --, e.g. "
                              "banger vm session start VM -- make watch")
    if p.log_cap is not None and not MIN_LOG_CAP <= p.log_cap <= MAX_LOG_CAP:
        raise InvalidArgument(f"--log-cap must be between 4K and 1G, got {p.log_cap} bytes")
    vm, agent = await ctx.daemon.vms.agent_for(p.vm)
    if p.name is None:
        from banger.namegen import generate

        name = generate({s.name for s in await Sessions(agent).list()})
    else:
        name = check_name(p.name)
    pty = PtySpec(p.rows, p.cols, p.term) if p.tty else None
    env = {"HOME": "/root", **p.env}
    spec = StartSpec(name, p.argv, cwd=p.cwd or default_cwd(vm), env=env, pty=pty,
                     log_cap=p.log_cap)
    info = await Sessions(agent).start(spec)
    ctx.log.info("session %s started in %s (pid %s)", info.name, vm.name, info.pid)
    return row(vm.name, info)


@method(SESSION_LIST)
async def session_list(ctx: Context, p: SessionListParams) -> list[SessionRow]:
    if p.vm is not None:
        vm, agent = await ctx.daemon.vms.agent_for(p.vm)
        return [row(vm.name, info) for info in await Sessions(agent).list()]
    rows: list[SessionRow] = []
    for vm in ctx.daemon.vms.repo.all():
        if vm.state != VmState.RUNNING:
            continue
        try:
            _, agent = await ctx.daemon.vms.agent_for(vm.name)
            rows += [row(vm.name, info) for info in await Sessions(agent).list(timeout=10.0)]
        except BangerError as e:  # one broken VM must not hide the others' sessions
            ctx.log.warning("listing sessions of %s: %s", vm.name, e)
    return rows


@method(SESSION_SHOW)
async def session_show(ctx: Context, p: SessionRef) -> SessionRow:
    vm, agent = await ctx.daemon.vms.agent_for(p.vm)
    return row(vm.name, await Sessions(agent).show(p.name))


@method(SESSION_STOP)
async def session_stop(ctx: Context, p: SessionStopParams) -> SessionRow:
    if not 0 <= p.grace <= 600:
        raise InvalidArgument("--grace must be 0..600 seconds")
    vm, agent = await ctx.daemon.vms.agent_for(p.vm)
    return row(vm.name, await Sessions(agent).signal(p.name, SIGTERM, grace=p.grace))


@method(SESSION_KILL)
async def session_kill(ctx: Context, p: SessionRef) -> SessionRow:
    vm, agent = await ctx.daemon.vms.agent_for(p.vm)
    return row(vm.name, await Sessions(agent).signal(p.name, SIGKILL))


@method(SESSION_RM)
async def session_rm(ctx: Context, p: SessionRmParams) -> SessionRow:
    vm, agent = await ctx.daemon.vms.agent_for(p.vm)
    return row(vm.name, await Sessions(agent).remove(p.name, force=p.force))


@method(SESSION_SEND)
async def session_send(ctx: Context, p: SessionSendParams) -> SessionSendResult:
    data = await _input(ctx)  # all of it first: an error then never meets a client mid-send
    _, agent = await ctx.daemon.vms.agent_for(p.vm)
    return SessionSendResult(await Sessions(agent).write(p.name, data, close=p.eof))


async def _input(ctx: Context) -> bytes:
    """The stdin frames the client sends after its request, up to stdin_eof (MAX_SEND)."""
    parts: list[bytes] = []
    size = 0
    while True:
        msg: dict[str, Any] = await ctx.inbox.get()
        data = msg.get("data")
        if msg.get("type") == "stdin_eof":
            return b"".join(parts)
        if msg.get("type") == "stdin" and isinstance(data, bytes):
            size += len(data)
            if size > MAX_SEND:
                raise InvalidArgument(f"send at most {MAX_SEND >> 20} MiB at once")
            parts.append(data)


async def _relay(ctx: Context, stream: SessionStream) -> None:
    async for chunk in stream.chunks():
        ctx.send_data("stdout", chunk)
        await ctx.drain()  # back-pressure: a slow client slows the reader, memory stays flat


@method(SESSION_LOGS)
async def session_logs(ctx: Context, p: SessionLogsParams) -> SessionLogsResult:
    if p.tail is not None and not 0 <= p.tail <= 1 << 24:
        raise InvalidArgument("--tail must be 0..16777216 lines")
    vm, agent = await ctx.daemon.vms.agent_for(p.vm)
    stream = Sessions(agent).logs(p.name, follow=p.follow, lines=p.tail)
    try:
        await _relay(ctx, stream)
        answer = logs_answer(await stream.result())
    finally:
        stream.close()  # the caller went away: only this request ends, never the session
    return SessionLogsResult(answer.start, answer.end, row(vm.name, answer.session))


async def _feed(ctx: Context, stream: SessionStream) -> None:
    while True:
        msg: dict[str, Any] = await ctx.inbox.get()
        kind = msg.get("type")
        data = msg.get("data")
        if kind == "stdin" and isinstance(data, bytes):
            await stream.write(data)
        elif kind == "resize":
            rows, cols = msg.get("rows"), msg.get("cols")
            if isinstance(rows, int) and isinstance(cols, int) and 0 < rows < 10000 \
                    and 0 < cols < 10000:
                stream.resize(rows, cols)


@method(SESSION_ATTACH)
async def session_attach(ctx: Context, p: SessionAttachParams) -> SessionAttachResult:
    if not (0 < p.rows < 10000 and 0 < p.cols < 10000 and 0 <= p.lines <= 100000):
        raise InvalidArgument("rows and cols must be 1..9999, lines 0..100000")
    vm, agent = await ctx.daemon.vms.agent_for(p.vm)
    stream = await Sessions(agent).attach(p.name, write=p.write, rows=p.rows, cols=p.cols,
                                         lines=p.lines)
    ctx.send({"type": "attached", "writer": stream.writer})
    feeder = asyncio.create_task(_feed(ctx, stream))
    try:
        await _relay(ctx, stream)
        info = final_state(await stream.result())
    finally:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder
        stream.close()  # detached: the session keeps running
    return SessionAttachResult(stream.writer, row(vm.name, info))
