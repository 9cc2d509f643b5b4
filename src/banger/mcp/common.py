"""What every tool shares: one-line errors, caps on guest output, and the notes that say so."""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError

from banger.errors import BangerError
from banger.textsafe import one_line

A = ParamSpec("A")
T = TypeVar("T")

OUTPUT_CAP = 64 * 1024  # bytes of each exec stream handed to the model by default
MAX_OUTPUT_CAP = 1024 * 1024
FILE_CAP = 1024 * 1024  # file_read's default; file_write takes up to WRITE_CAP
MAX_FILE_CAP = 8 * 1024 * 1024
WRITE_CAP = 8 * 1024 * 1024
DIFF_CAP = 256 * 1024
LOG_CAP = 64 * 1024  # session logs and console resources: the newest bytes
MAX_TIMEOUT = 3600.0


def one_line_errors(fn: Callable[A, Awaitable[T]]) -> Callable[A, Awaitable[T]]:
    """A failing tool answers with one clear line (an MCP tool error), never a traceback."""

    @functools.wraps(fn)
    async def tool(*args: A.args, **kwargs: A.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except ToolError:
            raise
        except BangerError as exc:  # the op id is for `banger daemon logs`; keep it
            raise ToolError(one_line(str(exc), 500)) from None
        except (OSError, ValueError) as exc:
            raise ToolError(one_line(f"{type(exc).__name__}: {exc}", 500)) from None

    return tool


def progress_to(ctx: Context) -> Callable[[dict[str, Any]], None]:
    """The daemon's progress events as MCP progress notifications (for a client that asked),
    sent from the client's worker thread; a changed line at once, the same one twice a second."""
    loop = asyncio.get_running_loop()
    count = itertools.count(1)  # MCP progress must grow; stages each restart at 0
    last = ("", 0.0)

    def report(event: dict[str, Any]) -> None:
        nonlocal last
        stage = one_line(str(event.get("stage") or ""), 80)
        message = one_line(str(event.get("message") or ""), 200)
        line = f"{stage}: {message}" if stage and message else stage or message
        now = time.monotonic()
        if line == last[0] and now - last[1] < 0.5:
            return
        last = (line, now)
        asyncio.run_coroutine_threadsafe(ctx.report_progress(next(count), None, line), loop)

    return report


def text(data: bytes, dropped: int, what: str, *, newest: bool = False) -> str:
    """Guest bytes as text for the model (undecodable bytes replaced), with a note when cut."""
    shown = data.decode("utf-8", errors="replace")
    if not dropped:
        return shown
    where = "earlier" if newest else "more"
    note = f"[banger: {what} cut: {dropped} {where} bytes not shown]"
    return f"{note}\n{shown}" if newest else f"{shown}\n{note}"


def bounded(value: int, low: int, high: int, what: str) -> int:
    if not low <= value <= high:
        raise ToolError(f"{what} must be {low}..{high}, not {value}")
    return value
