"""The page terminal: a websocket carrying a guest shell's bytes both ways, opened through the
agent exec path `vm shell` uses (a pty of the browser's size). Binary frames are keystrokes
and output; a text frame is a JSON control message ({"type": "resize", "rows", "cols"}).
The gate (guard.py) has checked Host, session, Origin and the CSRF token before this runs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from starlette.websockets import WebSocket, WebSocketDisconnect

from banger.agent.process import AgentProcess, PtySpec
from banger.daemon.state import Daemon
from banger.errors import BangerError
from banger.textsafe import one_line

log = logging.getLogger("banger.daemon.webui")
# The same login shell `banger vm shell` starts.
LOGIN_SHELL = "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi"
MAX_ROWS, MAX_COLS = 500, 1000
MAX_CONTROL = 256  # a resize message is ~40 bytes
MAX_INPUT = 64 * 1024  # one frame of keystrokes or a paste


def _size(value: object, default: int, top: int) -> int:
    """A terminal dimension from the browser: an int in 1..top, else the default."""
    try:
        number = int(str(value))
    except ValueError:
        return default
    return number if 1 <= number <= top else default


async def _to_browser(ws: WebSocket, proc: AgentProcess) -> None:
    async for chunk in proc.stdout:
        await ws.send_bytes(chunk)  # xterm.js renders the guest's bytes; never HTML


async def _from_browser(ws: WebSocket, proc: AgentProcess) -> None:
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes")
        if data is not None:
            if len(data) <= MAX_INPUT:
                await proc.write(data)
            continue
        text = message.get("text") or ""
        if len(text) > MAX_CONTROL:
            continue
        try:
            control = json.loads(text)
        except ValueError:
            continue
        if isinstance(control, dict) and control.get("type") == "resize":
            proc.resize(_size(control.get("rows"), 24, MAX_ROWS),
                        _size(control.get("cols"), 80, MAX_COLS))


async def serve_terminal(daemon: Daemon, ws: WebSocket, closing: asyncio.Event) -> None:
    name = ws.path_params["name"]
    rows = _size(ws.query_params.get("rows"), 24, MAX_ROWS)
    cols = _size(ws.query_params.get("cols"), 80, MAX_COLS)
    await ws.accept()
    try:
        _, agent = await daemon.vms.agent_for(name)
        proc = await agent.exec(shell=LOGIN_SHELL, stdin=True, pty=PtySpec(rows, cols))
    except BangerError as exc:
        await ws.send_text(json.dumps({"type": "error", "message": one_line(exc.message, 300)}))
        await ws.close(1011)
        return
    log.info("web UI: terminal opened in %s", name)
    tasks = [asyncio.create_task(_to_browser(ws, proc)),
             asyncio.create_task(_from_browser(ws, proc)),
             asyncio.create_task(closing.wait())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError,
                                     BangerError):
                await task
        proc.kill()  # the page closed (or the shell ended): nothing keeps running in the guest
        with contextlib.suppress(RuntimeError):
            await ws.close(1000)
        log.info("web UI: terminal closed in %s", name)
