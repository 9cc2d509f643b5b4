"""Start a VM: launch the VMM, wait for the agent (boot watchdog), undo everything on failure."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from banger.agent.client import AgentClient
from banger.errors import OperationFailed, Unavailable
from banger.logfiles import read_from, tail_line
from banger.progress import Progress
from banger.vmm.base import Backend, VmHandles, VmSpec
from banger.vms.agents import open_agent

log = logging.getLogger("banger.vms.coldboot")
BOOT_TIMEOUT = 90.0  # TCG, first boot of a systemd image included
EARLY_TIMEOUT = 15.0  # the initramfs normally speaks ~1.5 s after launch
EARLY_MARKERS = ("banger-initramfs:", "banger-init:")
ATTEMPTS = 3


class EarlyHang(Exception):
    """The guest printed nothing of banger's boot in time: the known TCG early-boot hang."""


def console_tail(path: Path, lines: int = 6) -> str:
    """The console's last lines as one clean line, for errors and last_error (guest text)."""
    return tail_line(path, lines) or "(no console output)"


class Watchdog:
    """Fails a boot whose VMM died, that hung before banger's initramfs, or that took too long."""

    def __init__(self, backend: Backend, handles: VmHandles, spec: VmSpec, timeout: float) -> None:
        self.backend, self.handles, self.spec = backend, handles, spec
        self.started = time.monotonic()
        self.deadline = self.started + timeout
        self.offset = spec.console_log.stat().st_size if spec.console_log.exists() else 0
        self.spoke = False

    def check(self) -> None:
        if not self.backend.is_alive(self.handles):
            raise OperationFailed(
                f"{self.backend.name} exited during boot: {console_tail(self.spec.console_log)}")
        now = time.monotonic()
        if not self.spoke and now - self.started > EARLY_TIMEOUT:
            text = _console_since(self.spec.console_log, self.offset)
            self.spoke = any(marker in text for marker in EARLY_MARKERS)
            if not self.spoke:
                raise EarlyHang
        if now > self.deadline:
            raise OperationFailed(
                f"the guest agent did not answer within {self.deadline - self.started:.0f}s: "
                f"{console_tail(self.spec.console_log)}")


async def connect_agent(backend: Backend, handles: VmHandles, watchdog: Watchdog) -> AgentClient:
    """Connect and say hello while the watchdog keeps an eye on the boot."""
    while True:
        watchdog.check()
        hello = asyncio.ensure_future(open_agent(backend, handles, timeout=5.0))
        try:
            while not hello.done():
                await asyncio.wait([hello], timeout=0.25)
                if not hello.done():
                    watchdog.check()
            return hello.result()
        except Unavailable:
            await asyncio.sleep(0.05)
        finally:
            if not hello.done():
                hello.cancel()


async def _launch_once(backend: Backend, spec: VmSpec, progress: Progress,
                       timeout: float) -> tuple[VmHandles, AgentClient]:
    async with contextlib.AsyncExitStack() as undo:
        progress("boot", None, f"starting {backend.name}")
        handles = await backend.start(spec)
        undo.push_async_callback(backend.kill, handles)
        handles.save(spec.vm_dir)
        undo.callback(VmHandles.clear, spec.vm_dir)
        progress("agent", None, "waiting for the guest agent")
        agent = await connect_agent(backend, handles, Watchdog(backend, handles, spec, timeout))
        undo.pop_all()
        return handles, agent
    raise AssertionError("unreachable")  # pragma: no cover


async def boot(backend: Backend, spec: VmSpec, progress: Progress,
               timeout: float = BOOT_TIMEOUT) -> tuple[VmHandles, AgentClient]:
    """Boot, retrying when the guest hangs before banger's initramfs speaks (a TCG flake)."""
    spec.vm_dir.mkdir(parents=True, exist_ok=True)
    await backend.prepare_disk(spec)
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return await _launch_once(backend, spec, progress, timeout)
        except EarlyHang:
            log.warning("boot attempt %d: no output from the guest after %.0fs; retrying",
                        attempt, EARLY_TIMEOUT)
            progress("boot", None, "early boot hang; retrying")
    raise OperationFailed(f"the guest hung in early boot {ATTEMPTS} times; see `banger vm logs "
                          f"{spec.name}` and report it")


def _console_since(path: Path, offset: int) -> str:
    """What the guest printed since offset (from the start if the log was rotated since)."""
    return read_from(path, offset)[0].decode(errors="replace")
