"""`vm run --rm`: the client process that owns a VM, and a watch that fires when it is gone.

A pid alone names a process only while it lives: after it exits the number is reused, and
after a reboot it starts over. An owner is its pid plus its start time (/proc/PID/stat field
22, clock ticks since boot) and the boot id, so a stored owner never matches a later process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

log = logging.getLogger("banger.vms.owner")
POLL = 1.0  # seconds between checks where pidfds are missing (kernels before 5.3)
_PROC = Path("/proc")


@dataclass(frozen=True)
class Owner:
    pid: int
    start: str  # "BOOT_ID:START_TICKS"


@cache
def _boot_id() -> str:
    return (_PROC / "sys/kernel/random/boot_id").read_text().strip()


def identify(pid: int) -> Owner | None:
    """The live process `pid` as an Owner; None when there is none (or only its zombie)."""
    if pid <= 0:
        return None
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # the command name before ")" may hold anything
    if len(fields) < 20 or fields[0] in ("Z", "X") or not fields[19].isdigit():
        return None
    return Owner(pid, f"{_boot_id()}:{fields[19]}")


def alive(owner: Owner) -> bool:
    """Whether the very process `owner` names still runs."""
    return identify(owner.pid) == owner


OnGone = Callable[[str], Awaitable[None]]


class OwnerWatch:
    """Calls on_gone(vm_id) once when the owner of a watched VM exits."""

    def __init__(self, on_gone: OnGone, poll: float = POLL) -> None:
        self.on_gone = on_gone
        self.poll = poll
        self._pidfds: dict[str, int] = {}
        self._pollers: dict[str, asyncio.Task[None]] = {}
        self._running: set[asyncio.Task[None]] = set()

    def watching(self, vm_id: str) -> bool:
        return vm_id in self._pidfds or vm_id in self._pollers

    def watch(self, vm_id: str, owner: Owner) -> None:
        """Start watching; a gone owner fires at once (on the next loop turn)."""
        self.forget(vm_id)
        loop = asyncio.get_running_loop()
        try:
            fd = os.pidfd_open(owner.pid)
        except (AttributeError, OSError):  # no pidfds here, or no such pid: the poll fires
            fd = -1
        if fd >= 0 and not alive(owner):  # the pid was reused before the pidfd was opened
            os.close(fd)
            fd = -1
        if fd < 0:
            self._pollers[vm_id] = loop.create_task(self._poll(vm_id, owner))
            return
        self._pidfds[vm_id] = fd
        loop.add_reader(fd, self._fire, vm_id)  # a pidfd turns readable when its process exits

    def forget(self, vm_id: str) -> None:
        fd = self._pidfds.pop(vm_id, None)
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)
        poller = self._pollers.pop(vm_id, None)
        if poller is not None and poller is not asyncio.current_task():
            poller.cancel()

    def close(self) -> None:
        for vm_id in [*self._pidfds, *self._pollers]:
            self.forget(vm_id)

    async def _poll(self, vm_id: str, owner: Owner) -> None:
        while alive(owner):
            await asyncio.sleep(self.poll)
        self._fire(vm_id)

    def _fire(self, vm_id: str) -> None:
        self.forget(vm_id)
        task = asyncio.get_running_loop().create_task(self._gone(vm_id))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _gone(self, vm_id: str) -> None:
        try:
            await self.on_gone(vm_id)
        except Exception:  # one VM's failed cleanup must not end the watch of others
            log.exception("removing VM %s after its owner went failed", vm_id)

    async def settle(self) -> None:
        """Wait for removals already fired (tests, shutdown)."""
        while self._running:
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._running)
