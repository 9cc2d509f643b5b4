"""The VM page through Starlette's TestClient on the fake backend: buttons that match the VM's
state (and the live stream that redraws them), in-page posts, the ports the guest listens on as
links, and the workspace."""

from __future__ import annotations

import asyncio
import re

import pytest
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.testclient import TestClient

from banger.daemon.state import Daemon
from banger.daemon.webui import views as views_module
from banger.daemon.webui.app import Pages
from banger.daemon.webui.auth import COOKIE, Auth
from banger.rpc.methods.vm import PortRow
from banger.vms.model import VmRecord, VmState
from tests.unit.test_webui_app import ORIGIN, login, ui

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx`")
UI = tuple[TestClient, Auth, Daemon]
__all__ = ["ui"]
IN_PAGE = {**ORIGIN, "X-Banger-In-Page": "1"}


def buttons(html: str) -> set[str]:
    """The actions the page's button row offers."""
    row = html.split('id="vm-actions"', 1)[1].split("</section>", 1)[0]
    return set(re.findall(r'name="action" value="(\w+)"', row)) | set(re.findall(r'data-action="(\w+)"', row))


def test_buttons_match_the_state(ui: UI) -> None:
    client, auth, daemon = ui
    login(client, auth)
    stopped = client.get("/vms/secret-vm").text
    assert buttons(stopped) == {"start", "delete"}
    assert "open-terminal" not in stopped
    vm = daemon.vms.repo.find("secret-vm")
    for state, expected in ((VmState.STARTING, {"delete"}), (VmState.STOPPING, {"delete"}),
                            (VmState.ERROR, {"start", "delete"}),
                            (VmState.RUNNING, {"stop", "save", "restart", "kill", "delete"})):
        daemon.vms.repo.set_state(vm.id, state)
        page = client.get("/vms/secret-vm").text
        assert buttons(page) == expected, state
    assert "open-terminal" in page
    # Stop, stop --save and restart ask first, in the page; kill and delete on a page of their own.
    assert page.count('<details class="ask"') == 3
    assert 'href="/vms/secret-vm/confirm/kill"' in page


def test_the_stream_redraws_the_buttons(ui: UI) -> None:
    """/events sends the button row again when the VM's state changes: Start gives way to Stop."""
    client, auth, daemon = ui
    login(client, auth)
    cookie = client.cookies[COOKIE]
    pages: Pages = next(r.endpoint.__self__ for r in client.app.app.routes  # type: ignore[attr-defined]
                        if getattr(r, "path", "") == "/events")
    vm = daemon.vms.repo.find("secret-vm")

    async def frames() -> list[str]:
        scope = {"type": "http", "method": "GET", "path": "/events", "query_string": b"vm=secret-vm",
                 "headers": [(b"cookie", f"{COOKIE}={cookie}".encode())]}
        response = await pages.events(Request(scope))
        assert isinstance(response, StreamingResponse)
        stream = aiter(response.body_iterator)
        got = [str(await anext(stream)) for _ in range(3)]  # rows, state, actions
        daemon.vms.repo.set_state(vm.id, VmState.RUNNING)
        got += [str(await anext(stream)) for _ in range(3)]
        pages.closing.set()
        return got

    sent = asyncio.run(frames())
    actions = [f'id="vm-actions">{f.replace("data: ", "")}</section>' for f in sent
               if f.startswith("event: actions")]
    assert [buttons(a) for a in actions] == [{"start", "delete"},
                                             {"stop", "save", "restart", "kill", "delete"}]


def test_an_in_page_post_answers_without_a_page(ui: UI) -> None:
    client, auth, daemon = ui
    csrf = login(client, auth)
    for step in ("prepare_disk", "prepare_disk_on", "start", "restore"):
        daemon.vms.backend.fail(step, "fake disk failed <b>")  # type: ignore[attr-defined]
    refused = client.post("/vms/secret-vm/start", data={"csrf": csrf}, headers=IN_PAGE)
    # One line of text for the page to show (as text, never HTML), no page.
    assert refused.status_code >= 400 and "fake disk failed <b>" in refused.text
    assert refused.headers["content-type"].startswith("text/plain")
    stopped = client.post("/vms/secret-vm/stop", data={"csrf": csrf}, headers=IN_PAGE)
    assert stopped.status_code == 204
    assert client.post("/vms/secret-vm/stop", data={"csrf": csrf}).status_code == 403  # no Origin


def test_listening_ports_link_to_the_vms_own_address(ui: UI,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    client, auth, daemon = ui
    login(client, auth)
    vm = daemon.vms.repo.find("secret-vm")
    daemon.vms.repo.update(vm.id, ip="127.77.0.9")
    daemon.vms.repo.set_state(vm.id, VmState.RUNNING)
    rows = [PortRow("tcp", "0.0.0.0", 8000, 42, "python3 <b>\x1b[31m", "secret-vm",
                    "secret-vm.vm:8000", True),
            PortRow("tcp", "0.0.0.0", 22, 7, "sshd", "secret-vm", "secret-vm.vm:2201", False),
            PortRow("tcp", "127.0.0.1", 631, 9, "cupsd", "secret-vm", None, False)]
    asked: list[str] = []

    async def ports_of(mgr: object, record: VmRecord) -> list[PortRow]:
        asked.append(record.name)
        return rows

    monkeypatch.setattr(views_module, "ports_of", ports_of)
    for path in ("/vms/secret-vm", "/vms/secret-vm/ports"):
        html = client.get(path).text
        assert '<a href="http://127.77.0.9:8000/"' in html  # the VM's address, not the UI's
        assert "secret-vm.vm:8000 (http)" in html
        assert "<code>secret-vm.vm:2201</code>" in html  # not HTTP: shown, not linked
        assert "tcp 127.0.0.1:631 (guest only)" in html
        assert "python3 &lt;b&gt;" in html and "\x1b" not in html
    assert asked == ["secret-vm", "secret-vm"]
    # A guest that does not answer in time: the page still renders, and says so.

    async def stuck(mgr: object, record: VmRecord) -> list[PortRow]:
        await asyncio.sleep(30)
        return rows

    monkeypatch.setattr(views_module, "ports_of", stuck)
    monkeypatch.setattr(views_module, "PORTS_TIMEOUT", 0.05)
    assert "cannot ask the guest now" in client.get("/vms/secret-vm/ports").text


def test_ports_need_a_session_and_a_running_vm(ui: UI) -> None:
    client, auth, _ = ui
    response = client.get("/vms/secret-vm/ports")
    assert response.status_code == 401 and "secret-vm" not in response.text
    login(client, auth)
    page = client.get("/vms/secret-vm/ports").text
    assert "the VM is not running" in page and 'href="http://localhost:18080/"' in page


def test_the_workspace_is_shown(ui: UI) -> None:
    client, auth, daemon = ui
    login(client, auth)
    assert "banger vm workspace prepare secret-vm PATH" in client.get("/vms/secret-vm").text
    vm = daemon.vms.repo.find("secret-vm")
    daemon.vms.repo.update(vm.id, workspace={"guest_path": "/root/repo", "commit": "abc123"})
    page = client.get("/vms/secret-vm").text
    assert "guest_path: /root/repo" in page and "commit: abc123" in page
