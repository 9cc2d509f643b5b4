"""Liveness of VMM processes we did not necessarily spawn (after a daemon restart)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path


def pid_alive(pid: int, marker: str | None = None) -> bool:
    """True if pid runs and (when given) its command line contains marker — guards pid reuse."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    if state == "Z":
        return False
    return marker is None or marker.encode() in cmdline


async def wait_gone(pid: int, marker: str | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid, marker):
            return True
        await asyncio.sleep(0.05)
    return not pid_alive(pid, marker)


def kill_pid(pid: int, marker: str | None, sig: int = signal.SIGKILL) -> None:
    if pid_alive(pid, marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
