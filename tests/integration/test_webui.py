"""The web UI in a real browser (Playwright driving Debian's chromium) against a real daemon and
real VMs under QEMU: log in with `banger ui --url`, watch a CLI-made VM appear and change state
without a reload, drive the lifecycle buttons, and see the gate refuse what it must.

Screenshots of every page go to $BANGER_TEST_ARTIFACTS (default /tmp/banger-webui-shots)."""

from __future__ import annotations

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
from tests.polling import wait_until
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


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


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

    # The buttons: start, then stop, on the VM's page.
    page.click(f'tr[data-vm="{VM}"] a')
    expect(page.locator("#vm-state .state")).to_have_text("stopped")
    page.click('button[value="start"]')
    expect(page.locator("#vm-state .state")).to_have_text("running", timeout=BOOT_MS)
    assert b.show(VM)["state"] == "running"
    expect(page.locator("#console")).not_to_be_empty(timeout=30_000)
    shot(page, "vm")
    # A published port is a link the host's browser opens.
    port = _free_port()
    b.run("vm", "forward", VM, f"{port}:8000", check=True)
    b.run("vm", "exec", VM, "--", "sh", "-c", "mkdir -p /tmp/www && echo hello-from-guest > "
          "/tmp/www/index.html && cd /tmp/www && (python3 -m http.server 8000 >/dev/null 2>&1 &)",
          check=True)
    b.run("vm", "session", "start", VM, "--name", "ticker", "--", "sleep", "600", check=True)
    page.reload()
    expect(page.locator("body")).to_contain_text("sleep 600")  # the VM's sessions
    expect(page.locator("code", has_text="ticker")).to_be_visible()
    # Named localhost, not the UI's own address: the guest's server must not get the cookie.
    link = page.locator(f'a[href="http://localhost:{port}/"]')
    wait_until(lambda: _answers(f"http://127.0.0.1:{port}/"), "the guest's http.server", 60, 0.2)
    with context.expect_page() as opened:
        link.click()
    expect(opened.value.locator("body")).to_contain_text("hello-from-guest")
    opened.value.close()
    page.goto(f"http://{listen}/")  # the dashboard with a running VM and its VMM's use
    expect(page.locator(f'a[href="/vms/{VM}"]')).to_be_visible()
    expect(page.locator("body")).to_contain_text("MiB of 1024 MiB")
    shot(page, "dashboard-running")
    page.go_back()
    page.click('button[value="stop"]')
    expect(page.locator("#vm-state .state")).to_have_text("stopped", timeout=120_000)
    assert b.show(VM)["state"] == "stopped"

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
    expect(page.locator("#vm-state .state")).to_have_text("running", timeout=BOOT_MS)
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
