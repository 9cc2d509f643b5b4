"""The web UI app through Starlette's TestClient: the gate (Host, session, Origin, CSRF), the
headers, what a page shows with and without a session, and guest text on pages."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from banger.daemon.state import Daemon
from banger.daemon.webui.app import build_app
from banger.daemon.webui.auth import COOKIE, Auth, allowed_hosts
from banger.store.db import utcnow
from banger.vms import events
from banger.vms.model import VmRecord, VmState
from tests.fakes.daemon import FakeDaemon

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx`")
BASE = "http://127.0.0.1:7777"
ORIGIN = {"Origin": BASE}


@pytest.fixture
def ui(tmp_path: Path) -> Iterator[tuple[TestClient, Auth, Daemon]]:
    fake = FakeDaemon(tmp_path)
    daemon = Daemon(fake.paths, fake.vms.config, fake.store, fake.vms.artifacts, fake.vms)
    vm = VmRecord(id="abc123", name="secret-vm", state=VmState.STOPPED, image="fake-image",
                  kernel="fake-kernel", vcpu=1, memory_mib=256, disk_mib=1024,
                  created_at=utcnow(), updated_at=utcnow(), net_mode="user", publish=["18080:80"],
                  last_error="boom \x1b[31mred\x1b[0m")
    fake.vms.repo.insert(vm)
    events.record(fake.paths.vm_dir(vm.id), "guest said <script>alert(1)</script> \x1b]0;title\x07")
    (fake.paths.vm_dir(vm.id) / "console.log").write_bytes(
        b"booting\n\x1b[2J\x1b[1;31mkernel panic? no\x1b[0m\n<b>bold</b>\n")
    auth = Auth()
    app = build_app(daemon, auth, allowed_hosts("127.0.0.1", 7777))
    try:
        with TestClient(app, base_url=BASE, follow_redirects=False) as client:
            yield client, auth, daemon
    finally:
        fake.close()  # a VM the test made must not outlive it (its fake guest process)


def login(client: TestClient, auth: Auth) -> str:
    """Log in with a fresh token; the CSRF token of the new session."""
    response = client.get("/login", params={"token": auth.new_token()})
    assert response.status_code == 303 and response.headers["location"] == "/"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    page = client.get("/vms/secret-vm")
    match = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert match
    return match.group(1)


def test_without_a_session_pages_show_only_how_to_log_in(ui: tuple[TestClient, Auth, Daemon]) -> None:
    client, _, _ = ui
    for path in ("/", "/vms", "/vms/secret-vm", "/vms/secret-vm/console", "/events"):
        response = client.get(path)
        assert response.status_code == 401
        assert "banger ui" in response.text and "secret-vm" not in response.text
    assert client.get("/static/app.css").status_code == 200


def test_a_token_logs_in_once(ui: tuple[TestClient, Auth, Daemon]) -> None:
    client, auth, _ = ui
    token = auth.new_token()
    assert client.get("/login", params={"token": token}).status_code == 303
    page = client.get("/vms")
    assert page.status_code == 200 and "secret-vm" in page.text
    client.cookies.clear()
    again = client.get("/login", params={"token": token})
    assert again.status_code == 401 and "used already" in again.text
    assert COOKIE not in again.headers.get("set-cookie", "")


def test_wrong_host_is_refused(ui: tuple[TestClient, Auth, Daemon]) -> None:
    client, auth, _ = ui
    login(client, auth)
    for host in ("evil.example:7777", "127.0.0.1:8080", "rebind.attacker.test"):
        response = client.get("/vms", headers={"Host": host})
        assert response.status_code == 403 and "secret-vm" not in response.text
    assert client.get("/vms", headers={"Host": "localhost:7777"}).status_code == 200


def test_posts_need_session_origin_and_csrf(ui: tuple[TestClient, Auth, Daemon]) -> None:
    client, auth, _ = ui
    assert client.post("/vms/secret-vm/kill", data={"confirm": "yes"},
                       headers=ORIGIN).status_code == 403  # no session
    csrf = login(client, auth)
    form = {"csrf": csrf}
    cross = client.post("/vms/secret-vm/kill", data={**form, "confirm": "yes"},
                        headers={"Origin": "http://evil.example"})
    assert cross.status_code == 403 and "did not come from this UI" in cross.text
    assert client.post("/vms/secret-vm/kill", data=form).status_code == 403  # no Origin/Referer
    no_token = client.post("/vms/secret-vm/kill", data={"confirm": "yes"}, headers=ORIGIN)
    assert no_token.status_code == 403 and "CSRF" in no_token.text
    wrong = client.post("/vms/secret-vm/kill", data={"csrf": "x" * 43, "confirm": "yes"},
                        headers=ORIGIN)
    assert wrong.status_code == 403
    big = client.post("/vms/secret-vm/kill", content=b"a=" + b"b" * 70000, headers={
        **ORIGIN, "Content-Type": "application/x-www-form-urlencoded", "X-CSRF-Token": csrf})
    assert big.status_code == 413
    # Passing the gate: kill without the confirmation box shows the confirmation again.
    unconfirmed = client.post("/vms/secret-vm/kill", data=form, headers=ORIGIN)
    assert unconfirmed.status_code == 400 and "Tick the box" in unconfirmed.text
    by_header = client.post("/vms/secret-vm/delete", headers={**ORIGIN, "X-CSRF-Token": csrf})
    assert by_header.status_code == 400  # the header token passes; still no confirmation


def test_confirmed_kill_and_delete_go_through(ui: tuple[TestClient, Auth, Daemon]) -> None:
    client, auth, daemon = ui
    csrf = login(client, auth)
    referer = {"Referer": f"{BASE}/vms/secret-vm/confirm/kill"}
    killed = client.post("/vms/secret-vm/kill", data={"csrf": csrf, "confirm": "yes"},
                         headers=referer)
    assert killed.status_code == 303 and killed.headers["location"] == "/vms/secret-vm"
    deleted = client.post("/vms/secret-vm/delete", data={"csrf": csrf, "confirm": "yes"},
                          headers=ORIGIN)
    assert deleted.status_code == 303 and deleted.headers["location"] == "/vms"
    assert daemon.vms.repo.all() == []
    ops = client.get("/").text
    assert "vm.kill" in ops and "vm.delete" in ops


def test_security_headers_and_guest_text(ui: tuple[TestClient, Auth, Daemon]) -> None:
    client, auth, _ = ui
    login(client, auth)
    page = client.get("/vms/secret-vm")
    h = page.headers
    assert h["content-security-policy"].startswith("default-src 'self'")
    assert "frame-ancestors 'none'" in h["content-security-policy"]
    assert h["x-frame-options"] == "DENY" and h["referrer-policy"] == "same-origin"
    assert h["cache-control"] == "no-store"
    assert "<script>alert" not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "<b>bold</b>" not in page.text and "&lt;b&gt;bold&lt;/b&gt;" in page.text
    assert "\x1b" not in page.text and "\x07" not in page.text
    assert "kernel panic? no" in page.text and "[1;31m" not in page.text
    assert "<script>" not in page.text.split("</head>", 1)[1]  # no inline script in the body
    # Port links use the other loopback name: the UI's cookie (per host) never reaches a guest.
    assert 'href="http://localhost:18080/"' in page.text
    via_localhost = client.get("/vms/secret-vm", headers={"Host": "localhost:7777"})
    assert 'href="http://127.0.0.1:18080/"' in via_localhost.text
    dashboard = client.get("/")
    assert dashboard.status_code == 200 and 'id="host-cores"' in dashboard.text
