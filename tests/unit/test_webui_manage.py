"""The second slice's pages through Starlette's TestClient on the fake backend: the create form
(checks, then a job whose progress page ends on the VM), images and kernels, operations with
cancel, and the terminal websocket's gate (Origin, CSRF, session)."""

from __future__ import annotations

import asyncio
import html
import re
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from banger.daemon.operations_repo import OperationRepo
from banger.daemon.state import Daemon
from banger.daemon.webui.auth import Auth
from banger.daemon.webui.jobs import JobContext, Jobs
from banger.daemon.webui.terminal import MAX_INPUT, _from_browser
from tests.fakes.daemon import FakeDaemon
from tests.unit.test_webui_app import BASE, ORIGIN, login, ui

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx`")
UI = tuple[TestClient, Auth, Daemon]
__all__ = ["ui"]
WS = BASE.replace("http:", "ws:")


def _job_page(client: TestClient, location: str, until: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while True:
        page = client.get(location)
        if f'id="job-state">{until}<' in page.text or time.monotonic() > deadline:
            return str(page.text)
        time.sleep(0.05)


def test_new_pages_need_a_session(ui: UI) -> None:
    client, auth, _ = ui
    for path in ("/create", "/images", "/ops", "/vms/secret-vm/terminal"):
        response = client.get(path)
        assert response.status_code == 401 and "secret-vm" not in response.text
    login(client, auth)
    for path in ("/create", "/images", "/ops", "/vms/secret-vm/terminal"):
        assert client.get(path).status_code == 200, path
    images = client.get("/images").text
    assert "fake-image" in images and "fake-kernel" in images


def test_create_form_refuses_bad_fields_in_one_line(ui: UI, tmp_path: Path) -> None:
    client, auth, _ = ui
    csrf = login(client, auth)
    cases = [({"vcpu": "two"}, "vCPUs must be a whole number"),
             ({"image": "nope"}, "unknown image 'nope'"),
             ({"net": "wifi"}, "network must be one of"),
             ({"memory": "lots"}, "memory"),
             ({"repo": str(tmp_path)}, "git")]
    for fields, said in cases:
        page = client.post("/create", data={"csrf": csrf, "image": "fake-image", **fields},
                           headers=ORIGIN)
        assert page.status_code == 400, fields
        error = re.search(r'class="error" role="alert">([^<]*)<', page.text)
        assert error and said in html.unescape(error.group(1)) and "\n" not in error.group(1), error


def test_create_runs_as_an_operation_and_ends_on_the_vm(ui: UI) -> None:
    client, auth, daemon = ui
    csrf = login(client, auth)
    made = client.post("/create", data={"csrf": csrf, "name": "formvm", "image": "fake-image",
                                        "vcpu": "1", "memory": "256M", "net": "user"},
                       headers=ORIGIN)
    assert made.status_code == 303 and made.headers["location"].startswith("/ops/op-")
    text = _job_page(client, made.headers["location"], "done")
    assert 'href="/vms/formvm"' in text
    assert daemon.vms.repo.find("formvm").state == "running"
    op_id = made.headers["location"].rsplit("/", 1)[1]
    record = next(r for r in OperationRepo(daemon.store).recent(5) if r.id == op_id)
    assert (record.method, record.state) == ("vm.create", "done")
    events = client.get(f"{made.headers['location']}/events").text  # a finished job: one frame
    assert "event: progress" in events and '"url": "/vms/formvm"' in events


def test_image_delete_needs_confirmation(ui: UI) -> None:
    client, auth, _ = ui
    csrf = login(client, auth)
    refused = client.post("/artifacts/image/fake-image/delete", data={"csrf": csrf},
                          headers=ORIGIN)
    assert refused.status_code == 400 and "Tick the box" in refused.text
    used = client.post("/artifacts/image/fake-image/delete",
                       data={"csrf": csrf, "confirm": "yes"}, headers=ORIGIN)
    assert used.status_code == 303  # secret-vm uses it: the operation fails and says so
    text = _job_page(client, used.headers["location"], "failed")
    assert "secret-vm" in text
    assert client.post("/images/pull", data={"csrf": csrf, "source": "a b"},
                       headers=ORIGIN).status_code == 400


def test_terminal_websocket_gate(ui: UI) -> None:
    client, auth, _ = ui
    csrf = login(client, auth)
    path = f"{WS}/vms/secret-vm/terminal/ws?csrf={csrf}"
    for headers, url in ((ORIGIN | {}, f"{WS}/vms/secret-vm/terminal/ws"),  # no CSRF token
                         ({"Origin": "http://evil.test"}, path),  # cross-origin page
                         ({}, path)):  # no Origin at all
        with pytest.raises(WebSocketDisconnect) as refused, \
                client.websocket_connect(url, headers=headers):
            pass
        assert refused.value.code == 1008
    client.cookies.clear()
    with pytest.raises(WebSocketDisconnect), client.websocket_connect(path, headers=ORIGIN):
        pass
    login(client, auth)
    csrf = login(client, auth)
    with client.websocket_connect(f"{WS}/vms/secret-vm/terminal/ws?csrf={csrf}",
                                  headers=ORIGIN) as ws:  # admitted; the VM is stopped
        message = ws.receive_json()
        assert message["type"] == "error" and "is stopped" in message["message"]


def test_a_running_job_is_cancelled(tmp_path: Path) -> None:
    fake = FakeDaemon(tmp_path)
    daemon = Daemon(fake.paths, fake.vms.config, fake.store, fake.vms.artifacts, fake.vms)

    async def scenario() -> None:
        jobs = Jobs(daemon)

        async def forever(ctx: JobContext) -> str:
            ctx.progress("wait", 0.5, "half way")
            await asyncio.Event().wait()
            return "/"

        job = jobs.start("test.sleep", "sleep", forever)
        while job.percent is None:
            await asyncio.sleep(0.01)
        assert job.percent == 50 and jobs.running() == [job]
        assert jobs.cancel(job.op_id)
        assert job.task is not None
        await asyncio.wait({job.task})
        assert job.state == "cancelled" and "cancelled from the web UI" in (job.error or "")
        assert not jobs.cancel(job.op_id)
        record = OperationRepo(daemon.store).recent(1)[0]
        assert (record.id, record.state) == (job.op_id, "cancelled")

    asyncio.run(scenario())
    assert BASE


class _Proc:
    def __init__(self) -> None:
        self.sizes: list[tuple[int, int]] = []
        self.written: list[bytes] = []

    def resize(self, rows: int, cols: int) -> None:
        self.sizes.append((rows, cols))

    async def write(self, data: bytes) -> None:
        self.written.append(data)


class _Socket:
    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self.messages = [*messages, {"type": "websocket.disconnect"}]

    async def receive(self) -> dict[str, Any]:
        return self.messages.pop(0)


def test_terminal_input_is_bounded_and_controls_checked() -> None:
    """What a page sends: keystrokes pass; bad, huge or out-of-range controls are ignored."""
    proc = _Proc()
    frames = [{"type": "websocket.receive", "bytes": b"ls\r"},
              {"type": "websocket.receive", "bytes": b"x" * (MAX_INPUT + 1)},
              {"type": "websocket.receive", "text": '{"type": "resize", "rows": 40, "cols": 120}'},
              {"type": "websocket.receive", "text": '{"type": "resize", "rows": -1, "cols": "9e9"}'},
              {"type": "websocket.receive", "text": "not json"},
              {"type": "websocket.receive", "text": "[1, 2]"},
              {"type": "websocket.receive", "text": " " * 300 + "{}"}]
    asyncio.run(_from_browser(_Socket(frames), proc))  # type: ignore[arg-type]
    assert proc.written == [b"ls\r"]
    assert proc.sizes == [(40, 120), (24, 80)]
