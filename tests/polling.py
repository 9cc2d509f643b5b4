"""Waiting for a condition with a deadline: what tests do instead of sleeping a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

INTERVAL = 0.01


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0,
               interval: float = INTERVAL) -> None:
    """Poll condition() until it holds; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        time.sleep(interval)


async def until(condition: Callable[[], bool], what: str, timeout: float = 10.0,
                interval: float = INTERVAL) -> None:
    """wait_until for coroutines: the event loop keeps running while it waits."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        await asyncio.sleep(interval)


def process_runs(pid: int) -> bool:
    """Whether pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
