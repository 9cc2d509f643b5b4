"""ui.open: start the web UI in the daemon's loop on first use, hand out one-time login URLs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from banger.daemon.context import Context
from banger.daemon.registry import method
from banger.rpc.methods import NoParams
from banger.rpc.methods.ui import UI_OPEN, UiOpenResult

if TYPE_CHECKING:
    from banger.daemon.webui.server import UiServer

_server: UiServer | None = None  # one daemon per process: its UI server, once started


@method(UI_OPEN)
async def ui_open(ctx: Context, _: NoParams) -> UiOpenResult:
    global _server
    from banger.daemon.webui.server import TOKEN_TTL, UiServer  # starlette and uvicorn: only when used

    if _server is None:
        _server = UiServer(ctx.daemon)
    await _server.ensure_started()
    return UiOpenResult(_server.login_url(), _server.base_url, TOKEN_TTL)


async def stop_ui() -> None:
    """At daemon shutdown: close the UI's connections before the loop's tasks are cancelled."""
    global _server
    if _server is not None:
        await _server.stop()
        _server = None
