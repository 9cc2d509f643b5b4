"""What every page needs: the daemon, the templates, and rendering with the session's CSRF token."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from banger.daemon.state import Daemon
from banger.daemon.webui.actions import ACTIONS, shown
from banger.daemon.webui.auth import Session
from banger.daemon.webui.views import Views
from banger.textsafe import clean

HERE = Path(__file__).parent
ASSETS = HERE / "assets" / "node_modules"
# The browser files served from the npm packages `make install` puts here (nothing else is).
ASSET_FILES = {
    "htmx.min.js": "htmx.org/dist/htmx.min.js",
    "xterm.js": "@xterm/xterm/lib/xterm.js",
    "xterm.css": "@xterm/xterm/css/xterm.css",
    "addon-fit.js": "@xterm/addon-fit/lib/addon-fit.js",
}
def _finalize(value: Any) -> Any:
    """Every string a template prints loses terminal controls (autoescape does the HTML)."""
    return clean(value) if isinstance(value, str) else value


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             finalize=_finalize, undefined=jinja2.StrictUndefined)
    env.globals["actions"] = ACTIONS
    env.globals["shown"] = shown
    return env


def assets_installed() -> bool:
    return (ASSETS / ASSET_FILES["htmx.min.js"]).is_file()


class Renderer:
    def __init__(self, daemon: Daemon, closing: asyncio.Event) -> None:
        self.daemon = daemon
        self.closing = closing  # set when the server stops: event streams end at once
        self.env = environment()
        self.views = Views.of(daemon)
        self.htmx = assets_installed()

    def render(self, template: str, request: Request | None, status: int = 200,
               **values: Any) -> HTMLResponse:
        session: Session | None = request.scope.get("banger_session") if request else None
        html = self.env.get_template(template).render(csrf=session.csrf if session else "",
                                                  htmx=self.htmx, **values)
        return HTMLResponse(html, status_code=status)
