"""Start a VM: launch the VMM, wait for the agent (boot watchdog), undo everything on failure."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from banger.agent.client import AgentClient, connect_unix
from banger.errors import BangerError, OperationFailed, Unavailable
from banger.progress import Progress
from banger.vmm.base import Backend, VmHandles, VmSpec

log = logging.getLogger("banger.vms.boot")
BOOT_TIMEOUT = 90.0  # TCG, first boot of a systemd image included
INIT_MARKER = "banger-init:"


def console_tail(path: Path, lines: int = 6) -> str:
    try:
        text = path.read_bytes()[-16384:].decode(errors="replace")
    except OSError:
        return "(no console output)"
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(kept[-lines:]) or "(no console output)"


async def _connect_agent(backend: Backend, handles: VmHandles, spec: VmSpec,
                         deadline: float) -> AgentClient:
    """Connect and say hello, failing fast if the VMM dies meanwhile."""
    sock = Path(handles.agent_socket)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        if not backend.is_alive(handles):
            raise OperationFailed(f"{backend.name} exited during boot: {console_tail(spec.console_log)}")
        try:
            hello = asyncio.ensure_future(connect_unix(sock, timeout=min(remaining, 5.0)))
            while not hello.done():
                await asyncio.wait([hello], timeout=0.25)
                if not hello.done() and not backend.is_alive(handles):
                    hello.cancel()
                    raise OperationFailed(
                        f"{backend.name} exited during boot: {console_tail(spec.console_log)}")
            return hello.result()
        except Unavailable:
            await asyncio.sleep(0.05)


async def _launch_once(backend: Backend, spec: VmSpec, progress: Progress,
                       timeout: float) -> tuple[VmHandles, AgentClient]:
    async with contextlib.AsyncExitStack() as undo:
        progress("boot", None, f"starting {backend.name}")
        handles = await backend.start(spec)
        undo.push_async_callback(backend.kill, handles)
        handles.save(spec.vm_dir)
        undo.callback(VmHandles.clear, spec.vm_dir)
        progress("agent", None, "waiting for the guest agent")
        agent = await _connect_agent(backend, handles, spec, time.monotonic() + timeout)
        undo.pop_all()
        return handles, agent
    raise AssertionError("unreachable")  # pragma: no cover


async def boot(backend: Backend, spec: VmSpec, progress: Progress,
               timeout: float = BOOT_TIMEOUT) -> tuple[VmHandles, AgentClient]:
    """Boot with one retry when the guest never reached banger's init (a known TCG early hang)."""
    spec.vm_dir.mkdir(parents=True, exist_ok=True)
    await backend.prepare_disk(spec)
    for attempt in (1, 2):
        start_offset = spec.console_log.stat().st_size if spec.console_log.exists() else 0
        try:
            return await _launch_once(backend, spec, progress, timeout)
        except TimeoutError:
            reached_init = INIT_MARKER in _console_since(spec.console_log, start_offset)
            if attempt == 1 and not reached_init:
                log.warning("no agent after %.0fs and the guest never reached init; retrying", timeout)
                progress("boot", None, "early boot hang; retrying once")
                continue
            raise OperationFailed(
                f"the guest agent did not answer within {timeout:.0f}s: "
                f"{console_tail(spec.console_log)}"
            ) from None
        except BangerError:
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def _console_since(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""
