"""vm.exec: run a command in a guest, streaming stdin/stdout/stderr through the RPC connection."""

from __future__ import annotations

import asyncio
import contextlib
import signal as signals
from typing import Any

from banger.agent.process import AgentProcess, PtySpec
from banger.daemon.context import Context
from banger.daemon.registry import method
from banger.errors import InvalidArgument
from banger.rpc.methods.vm import VM_EXEC, ExecParams, ExecResult
from banger.vms import events
from banger.vms.model import VmRecord


async def _pump_out(ctx: Context, proc: AgentProcess, stream: str) -> None:
    source = proc.stdout if stream == "stdout" else proc.stderr
    async for chunk in source:
        ctx.send_data(stream, chunk)
        await ctx.drain()  # back-pressure: a slow client slows the guest, memory stays flat


async def _pump_in(ctx: Context, proc: AgentProcess) -> None:
    while True:
        msg: dict[str, Any] = await ctx.inbox.get()
        kind = msg.get("type")
        data, rows, cols, sig = msg.get("data"), msg.get("rows"), msg.get("cols"), msg.get("signal")
        if kind == "stdin" and isinstance(data, bytes):
            await proc.write(data)
        elif kind == "stdin_eof":
            await proc.close_stdin()
        elif kind == "resize" and type(rows) is int and type(cols) is int \
                and 0 < rows < 10000 and 0 < cols < 10000:
            proc.resize(rows, cols)
        elif kind == "signal":
            proc.signal(sig if type(sig) is int and 0 < sig < 65 else signals.SIGINT)


def _client_gone(ctx: Context, vm: VmRecord) -> None:
    """Say in the VM's events (`vm show`) what became of it when its exec client vanished."""
    if vm.owner_pid is not None:
        fate = "the VM is deleted when the `vm run --rm` that made it ends"
    else:
        fate = "the VM keeps running"
    vm_dir = ctx.daemon.paths.vm_dir(vm.id)
    if vm_dir.is_dir():  # an --rm VM may be deleted already
        events.record(vm_dir, f"client went away during `vm exec`; its command was killed; {fate}")


@method(VM_EXEC)
async def vm_exec(ctx: Context, p: ExecParams) -> ExecResult:
    if (p.argv is None) == (p.shell is None) or (p.argv is not None and not p.argv):
        raise InvalidArgument("exec needs a command (argv) or a shell string")
    vm, agent = await ctx.daemon.vms.agent_for(p.vm)
    pty = PtySpec(p.rows, p.cols, p.term) if p.tty else None
    proc = await agent.exec(p.argv, shell=p.shell, env=p.env, cwd=p.cwd, user=p.user,
                            stdin=p.stdin or p.tty, pty=pty)
    pumps = [asyncio.create_task(_pump_out(ctx, proc, "stdout")),
             asyncio.create_task(_pump_out(ctx, proc, "stderr"))]
    feeder = asyncio.create_task(_pump_in(ctx, proc))
    try:
        status = await proc.wait()
        await asyncio.gather(*pumps)
    except asyncio.CancelledError:
        proc.kill()  # the caller went away: the guest command goes with it
        if not ctx.daemon.shutdown.is_set():
            _client_gone(ctx, vm)
        raise
    finally:
        feeder.cancel()
        for task in pumps:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder
    return ExecResult(status.code, status.signal, status.shell_code)
