"""The web UI in a real browser (Playwright driving Debian's chromium) against a real daemon and
real VMs under QEMU: log in with `banger ui --url`, watch a CLI-made VM appear and change state
without a reload, drive the lifecycle buttons, and see the gate refuse what it must.

Screenshots of every page go to $BANGER_TEST_ARTIFACTS (default /tmp/banger-webui-shots)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from banger.config import host as host_facts
from banger.net.plan import own_loopback
from tests.conftest import BIN, Banger
from tests.sockettrust import NOBODY, SYSTEM_PYTHON
from tests.vmtest import SLIM, vm_home, vm_lock

pytestmark = [pytest.mark.vm, pytest.mark.network]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = Path(os.environ.get("BANGER_TEST_ARTIFACTS") or "/tmp/banger-webui-shots")
BOOT_MS = 180_000  # a first start may build the fast-start template under TCG
VM = "webvm"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def vb() -> Iterator[tuple[Banger, str]]:
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium: `make install` installs it")
    with vm_lock(), vm_home(SLIM) as b:
        # This user's own address, as by default; another port: a real UI may hold 7777.
        listen = f"{own_loopback()}:{_free_port()}"
        config = b.home / "config" / "config.toml"
        config.write_text(f'ui_listen = "{listen}"\n' + config.read_text())
        yield b, listen


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def login_url(b: Banger) -> str:
    out = b.run("ui", "--url", check=True).stdout.strip()
    assert re.fullmatch(r"http://127(\.\d{1,3}){3}:\d+/login\?token=[A-Za-z0-9_-]{43}", out), out
    return out


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"webui-{name}.png"), full_page=True)


def cli(b: Banger, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([str(BIN / "banger"), *args], env=b.env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def buttons(page: Page) -> list[str]:
    """The VM page's button row: the actions it offers, in order."""
    return [str(a) for a in page.locator("#vm-actions > [data-action], #vm-actions > form button")
            .evaluate_all("els => els.map(e => e.dataset.action || e.value)")]


# Run as another local user: no cookie, no token, and the daemon's socket is not theirs.
OTHER_USER = r"""
import json, socket, sys, urllib.request, urllib.error
listen, sock_path = sys.argv[1], sys.argv[2]
out = {}
for path in ("/", "/vms", "/vms/%s" % sys.argv[3], "/login?token=" + "A" * 43):
    try:
        with urllib.request.urlopen("http://" + listen + path, timeout=10) as r:
            out[path] = [r.status, r.read().decode()]
    except urllib.error.HTTPError as e:
        out[path] = [e.code, e.read().decode()]
    except OSError as e:
        out[path] = [0, repr(e)]
try:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(sock_path)
    s.sendall(b'{"v":2,"method":"ui.open","params":{},"op_id":"op-00000000"}\n')
    out["socket"] = s.recv(65536).decode(errors="replace")
except OSError as e:
    out["socket"] = "refused: " + type(e).__name__
print(json.dumps(out))
"""


def _other_user_gets_nothing(b: Banger, listen: str) -> None:
    home_mode = b.home.stat().st_mode
    b.home.chmod(0o711)  # let them reach the socket's path: only its own checks stand in the way
    try:
        res = subprocess.run([str(SYSTEM_PYTHON), "-c", OTHER_USER, listen, str(b.socket), VM],
                             user=NOBODY, group=NOBODY, extra_groups=[], capture_output=True,
                             text=True, timeout=60, cwd="/")
    finally:
        b.home.chmod(home_mode)
    assert res.returncode == 0, res.stderr
    seen = json.loads(res.stdout)
    for path in ("/", "/vms", f"/vms/{VM}", "/login?token=" + "A" * 43):
        status, body = seen[path]
        assert status == 401 and VM not in body and "banger ui" in body, (path, status)
    assert "token" not in seen["socket"], seen["socket"]


def vm_state(page: Page, state: str, timeout: float = BOOT_MS) -> None:
    """Wait for the VM page's live state, failing at once with the error a button got."""
    page.wait_for_function(
        "s => document.querySelector('#vm-state .state').textContent === s"
        " || document.querySelector('#action-error').textContent !== ''", arg=state,
        timeout=timeout)
    assert page.locator("#action-error").text_content() == ""
    expect(page.locator("#vm-state .state")).to_have_text(state)


def _open_confirmation_survives_redraws(page: Page) -> None:
    """The stream redraws the buttons (its first frame after every (re)connect does): a
    confirmation the user has opened must stay open. The stream is replayed here, with a short
    retry, so the buttons are redrawn many times while the confirmation is open."""
    html = page.inner_html("#vm-actions")
    data = "".join(f"data: {line}\n" for line in html.splitlines())
    body = f"retry: 50\n\nevent: actions\n{data}\n"
    page.route("**/events?*", lambda route: route.fulfill(
        status=200, content_type="text/event-stream", body=body))
    page.reload()
    page.evaluate("""() => { window.redraws = 0; new MutationObserver(() => window.redraws++)
        .observe(document.getElementById('vm-actions'), {childList: true}); }""")
    page.click('details[data-action="stop"] summary')
    page.wait_for_function("() => window.redraws >= 3")
    assert page.locator('button[value="stop"]').is_visible()
    page.unroute("**/events?*")
    page.reload()


def row_state(page: Page, state: str) -> None:
    expect(page.locator(f'tr[data-vm="{VM}"] .state')).to_have_text(state, timeout=BOOT_MS)


def test_the_web_ui_end_to_end(vb: tuple[Banger, str], browser: Browser) -> None:
    b, listen = vb
    url = login_url(b)
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    page.goto(url)
    assert page.url == f"http://{listen}/"  # the token became a cookie, then the dashboard
    expect(page.locator("#host-cores")).to_have_text(str(host_facts.cpu_count()))
    shot(page, "dashboard-empty")

    # A VM made with the CLI appears, and its state changes show, with no reload.
    page.goto(f"http://{listen}/vms")
    page.evaluate("window.noReload = true")
    expect(page.locator("body")).to_have_attribute("data-live", "connected")
    create = cli(b, "vm", "create", "--name", VM)
    expect(page.locator(f'tr[data-vm="{VM}"]')).to_be_visible(timeout=BOOT_MS)
    row_state(page, "running")
    assert create.wait(timeout=120) == 0, create.communicate()[1]
    shot(page, "vms")
    stop = cli(b, "vm", "stop", VM)
    row_state(page, "stopped")
    assert stop.wait(timeout=120) == 0
    assert page.evaluate("window.noReload") is True

    # The buttons match the state: a stopped VM offers Start (and Delete), nothing else.
    page.click(f'tr[data-vm="{VM}"] a')
    expect(page.locator("#vm-state .state")).to_have_text("stopped")
    assert buttons(page) == ["start", "delete"]
    page.evaluate("window.noReload = true")
    page.click('button[value="start"]')
    vm_state(page, "running")
    expect(page.locator("#open-terminal")).to_be_visible()  # the row was redrawn live
    assert buttons(page) == ["stop", "save", "restart", "kill", "delete"]
    assert b.show(VM)["state"] == "running"
    expect(page.locator("#console")).not_to_be_empty(timeout=30_000)
    # What the VM page shows: spec, DNS name and address, events, workspace.
    shown = b.show(VM)
    expect(page.locator("body")).to_contain_text("1 vCPU · 1G memory · 4G disk")
    expect(page.locator("body")).to_contain_text(f"{VM}.vm")
    expect(page.locator("body")).to_contain_text(str(shown["ip"]))
    expect(page.locator("ul.events li").first).to_be_visible()
    expect(page.locator("#workspace")).to_contain_text("banger vm workspace prepare")

    # Ports: a published one, and one the guest listens on, found as `vm ports` finds it.
    port = _free_port()
    b.run("vm", "forward", VM, f"{port}:8000", check=True)
    b.run("vm", "session", "start", VM, "--name", "web", "--", "sh", "-c",
          "mkdir -p /tmp/www && echo hi > /tmp/www/hello-from-guest.txt && cd /tmp/www && "
          "exec python3 -m http.server 8000", check=True)
    b.run("vm", "session", "start", VM, "--name", "ticker", "--", "sleep", "600", check=True)
    page.reload()
    page.evaluate("window.noReload = true")
    expect(page.locator("body")).to_contain_text("sleep 600")  # the VM's sessions
    expect(page.locator("code", has_text="ticker")).to_be_visible()
    listening = page.locator('a[data-port="8000"]')
    expect(listening).to_be_visible(timeout=60_000)  # the ports refresh in place
    href = listening.get_attribute("href")
    assert href == f"http://{shown['ip']}:8000/", href  # the VM's own address: no UI cookie
    expect(listening).to_contain_text(f"{VM}.vm:8000")
    listing = page.request.get(href)
    assert listing.ok and "Directory listing" in listing.text()
    assert "hello-from-guest.txt" in listing.text()
    cli_ports = b.run("vm", "ports", VM, "--json", check=True).stdout
    assert f'"{VM}.vm:8000"' in cli_ports.replace(" ", "")  # the same finding as the CLI's
    # Published: named localhost, not the UI's own address (the guest must not get the cookie).
    published = page.locator(f'a[href="http://localhost:{port}/"]')
    with context.expect_page() as opened:
        published.click()
    expect(opened.value.locator("body")).to_contain_text("hello-from-guest.txt")
    opened.value.close()
    shot(page, "vm")
    page.goto(f"http://{listen}/")  # the dashboard with a running VM and its VMM's use
    expect(page.locator(f'a[href="/vms/{VM}"]')).to_be_visible()
    expect(page.locator("body")).to_contain_text("MiB of 1024 MiB")
    expect(page.locator("#accel")).to_have_text(re.compile(r"^(KVM|TCG)$"))
    expect(page.locator("#vmm")).to_contain_text("qemu")
    expect(page.locator("#vm-count")).to_have_text("1")
    expect(page.locator("#disk")).to_contain_text("GiB")
    expect(page.locator("#memory")).to_contain_text("GiB")
    shot(page, "dashboard-running")

    # Stop with its button and confirmation: Start comes back, Stop goes, with no reload.
    page.go_back()
    _open_confirmation_survives_redraws(page)
    page.evaluate("window.noReload = true")
    page.click('details[data-action="stop"] summary')
    shot(page, "confirm-stop")
    page.click('button[value="stop"]')
    expect(page.locator('button[value="start"]')).to_be_visible(timeout=120_000)
    expect(page.locator('details[data-action="stop"]')).to_have_count(0)
    expect(page.locator("#vm-state .state")).to_have_text("stopped")
    assert page.evaluate("window.noReload") is True
    assert b.show(VM)["state"] == "stopped"

    _other_user_gets_nothing(b, listen)

    # The gate, from outside the browser: the session cookie alone is not enough.
    cookie = next(c["value"] for c in context.cookies() if c["name"] == "banger_session")
    base = f"http://{listen}"
    with httpx.Client(base_url=base, cookies={"banger_session": cookie}) as http:
        form = {"confirm": "yes"}
        cross = http.post(f"/vms/{VM}/delete", data=form, headers={"Origin": "http://evil.test"})
        assert cross.status_code == 403
        no_csrf = http.post(f"/vms/{VM}/delete", data=form, headers={"Origin": base})
        assert no_csrf.status_code == 403 and "CSRF" in no_csrf.text
        rebound = http.get("/vms", headers={"Host": f"rebind.test:{listen.split(':')[1]}"})
        assert rebound.status_code == 403 and VM not in rebound.text
    assert b.show(VM)["state"] == "stopped"  # nothing above reached the VM
    anonymous = httpx.get(f"{base}/vms")
    assert anonymous.status_code == 401 and VM not in anonymous.text
    assert "banger ui" in anonymous.text

    # Kill and delete need the confirmation box.
    page.click('button[value="start"]')
    expect(page.locator("#action-error")).to_be_empty()
    vm_state(page, "running")
    page.click("text=Kill…")
    shot(page, "confirm-kill")
    page.click('button:has-text("Kill")')
    expect(page.locator(".error")).to_contain_text("Tick the box")
    assert b.show(VM)["state"] == "running"
    page.check('input[name="confirm"]')
    page.click('button:has-text("Kill")')
    expect(page.locator("#vm-state .state")).to_have_text("stopped")
    page.click("text=Delete…")
    page.check('input[name="confirm"]')
    page.click('button:has-text("Delete")')
    page.wait_for_url(f"{base}/vms")
    expect(page.locator(f'tr[data-vm="{VM}"]')).to_have_count(0)
    assert b.run("vm", "show", VM).returncode == 1

    page.goto(f"{base}/vms/{VM}")
    expect(page.locator("main")).to_contain_text(VM)  # a page saying it is gone, not an error
    shot(page, "missing")
    page.goto(f"{base}/")
    expect(page.locator("table").last).to_contain_text("vm.delete")
    shot(page, "dashboard")

    # The login link worked once: a second browser gets only the login hint.
    other = browser.new_context()
    again = other.new_page()
    again.goto(url)
    expect(again.locator("body")).to_contain_text("used already")
    shot(again, "login")
    other.close()
    context.close()
