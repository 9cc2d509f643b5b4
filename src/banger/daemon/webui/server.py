"""The UI server's life: a loopback socket we bind, uvicorn serving on it as a daemon task."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import socket
from collections.abc import Iterator

import uvicorn

from banger.config.model import ui_address
from banger.daemon.state import Daemon
from banger.daemon.webui.app import build_app
from banger.daemon.webui.auth import TOKEN_TTL, Auth, allowed_hosts
from banger.errors import Unavailable
from banger.net.plan import own_loopback

log = logging.getLogger("banger.daemon.webui")
PORT = 7777  # the default port, on this user's own loopback address (net.plan.own_loopback)
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


class _InLoopServer(uvicorn.Server):
    """uvicorn without its signal handlers: the daemon's own SIGTERM handling stays in charge."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class UiServer:
    def __init__(self, daemon: Daemon) -> None:
        self.address, self.port = ui_address(daemon.config.ui_listen or f"{own_loopback()}:{PORT}")
        self.auth = Auth()
        self.closing = asyncio.Event()
        self.app = build_app(daemon, self.auth, allowed_hosts(self.address, self.port),
                             self.closing)
        self._server: _InLoopServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        shown = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{shown}:{self.port}"

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.address, self.port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise Unavailable(f"the web UI cannot listen on {self.address}:{self.port}: "
                              f"{exc.strerror}; set another ui_listen port in config.toml") from exc
        return sock

    async def ensure_started(self) -> None:
        if self.running:
            return
        sock = self._bind()  # our own bind: uvicorn would sys.exit() on a busy port
        self.closing.clear()
        config = uvicorn.Config(self.app, lifespan="off", log_config=None, access_log=False,
                                proxy_headers=False, server_header=False, date_header=False,
                                timeout_graceful_shutdown=2)
        server = _InLoopServer(config)
        self._server = server
        # A fresh context: the server's log lines must not carry the op id of the first ui.open.
        self._task = asyncio.create_task(server.serve(sockets=[sock]), name="webui",
                                         context=contextvars.Context())
        waited = 0.0
        while not server.started and not self._task.done() and waited < START_TIMEOUT:
            await asyncio.sleep(0.02)
            waited += 0.02
        if not server.started:
            await self.stop()
            raise Unavailable("the web UI did not start; see `banger daemon logs`")
        log.info("web UI serving on %s", self.base_url)

    def login_url(self) -> str:
        return f"{self.base_url}/login?token={self.auth.new_token()}"

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self.closing.set()  # live pages' event streams end, so the connections can close
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), STOP_TIMEOUT)
        except (TimeoutError, asyncio.CancelledError, Exception):
            self._task.cancel()
        self._server = self._task = None
        log.info("web UI stopped")


__all__ = ["TOKEN_TTL", "UiServer"]
