"""The UI server in an event loop: it serves on its loopback port, a busy port is one clear
error, and stop() closes the port even while a page holds an event stream open."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
import msgspec
import pytest

from banger.daemon.state import Daemon
from banger.daemon.webui.server import UiServer
from banger.errors import Unavailable
from tests.fakes.daemon import FakeDaemon


def _daemon(home: Path, listen: str) -> Daemon:
    fake = FakeDaemon(home)
    config = msgspec.structs.replace(fake.vms.config, ui_listen=listen)
    return Daemon(fake.paths, config, fake.store, fake.vms.artifacts, fake.vms)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_busy_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = UiServer(_daemon(tmp_path, f"127.0.0.1:{port}"))
        with pytest.raises(Unavailable) as caught:
            asyncio.run(server.ensure_started())
    assert "cannot listen on 127.0.0.1" in str(caught.value) and "ui_listen" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_serves_then_stops_with_a_live_stream_open(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = UiServer(_daemon(tmp_path, f"127.0.0.1:{port}"))

    async def scenario() -> None:
        await server.ensure_started()
        await server.ensure_started()  # a second ui.open reuses the running server
        url = server.login_url()
        assert url.startswith(f"http://127.0.0.1:{port}/login?token=")
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"http://127.0.0.1:{port}/")).status_code == 401
            assert (await client.get(url)).status_code == 303
            async with client.stream("GET", f"http://127.0.0.1:{port}/events") as events:
                assert events.headers["content-type"].startswith("text/event-stream")
                first = await anext(events.aiter_lines())
                assert first == "event: rows"
                await asyncio.wait_for(server.stop(), 3.0)  # the stream ends, the port closes
        assert not server.running

    asyncio.run(scenario())
    assert _port_free(port)
