"""The web UI's second slice in a real browser (Playwright + Debian's chromium) against a real
daemon and real VMs: create a VM from the form and watch its progress reach `running`, type
into a shell in the page terminal (with resize; closing the page ends the shell), pull an image
from a registry on loopback with progress and delete it, cancel a running operation, and see a
cross-origin websocket refused. Screenshots go to $BANGER_TEST_ARTIFACTS like test_webui.py's."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin

from tests.conftest import Banger
from tests.integration.test_webui import BOOT_MS, _free_port, browser, login_url, shot
from tests.ocitest import push_image, registry, rootfs_tree, tar_tree
from tests.polling import wait_until
from tests.vmtest import SLIM, ensure_artifacts, vm_home, vm_lock

pytestmark = [pytest.mark.vm, pytest.mark.network]
__all__ = ["browser"]
VM = "formvm"
PULL_MS = 600_000


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="webui-oci-", dir="/var/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def ref(work: Path) -> Iterator[str]:
    """The slim test image as one layer in a registry on loopback."""
    with registry(work) as addr:
        cache = ensure_artifacts(SLIM)
        tree = rootfs_tree(cache / "state" / "images" / SLIM / "rootfs.ext4", work / "slim")
        layer = tar_tree(tree, work / "base.tar")
        shutil.rmtree(tree)
        yield push_image(work, addr, "webui/slim:v1", [layer])


@pytest.fixture(scope="module")
def stall() -> Iterator[str]:
    """A 'registry' on loopback that accepts and never answers: a pull from it waits forever."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


@pytest.fixture(scope="module")
def ub(ref: str, stall: str) -> Iterator[tuple[Banger, str]]:
    registry_addr = ref.split("/", 1)[0].removeprefix("docker://")
    with vm_lock(), vm_home(SLIM) as b:
        listen = f"127.0.0.1:{_free_port()}"
        config = b.home / "config" / "config.toml"
        config.write_text(f'ui_listen = "{listen}"\n'
                          f'oci_insecure_registries = ["{registry_addr}", "{stall}"]\n'
                          + config.read_text())
        yield b, listen


def _logged_in(b: Banger, browser: Browser, listen: str) -> Page:
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    page.goto(login_url(b))
    assert page.url == f"http://{listen}/"
    return page


def _terminal_line(page: Page, pattern: str) -> None:
    row = page.locator(".xterm-rows > div").filter(has_text=re.compile(pattern))
    expect(row.first).to_be_visible(timeout=30_000)


def _alive(b: Banger, pid: str) -> bool:
    res = b.run("vm", "exec", VM, "--", "sh", "-c", f"test -d /proc/{pid}", timeout=60)
    return res.returncode == 0


def _repo(root: Path) -> Path:
    """A small git repo on the host, with one uncommitted change (it ships too)."""
    repo = root / "host-repo"
    repo.mkdir()
    subprocess.run(["sh", "-c", "git init -q -b main && git config user.email dev@example.com && "
                    "git config user.name Dev && echo from-the-host > marker.txt && "
                    "git add -A && git commit -qm first && echo local-change >> marker.txt"],
                   cwd=repo, check=True)
    return repo


def test_create_from_the_form_then_type_in_its_terminal(ub: tuple[Banger, str],
                                                        browser: Browser, work: Path) -> None:
    b, listen = ub
    page = _logged_in(b, browser, listen)
    page.goto(f"http://{listen}/create")
    page.fill('input[name="repo"]', str(work))  # not a git repo: refused before anything is made
    page.click('#create-form button[type="submit"]')
    expect(page.locator(".error")).to_contain_text("git")
    assert b.run("vm", "show", VM).returncode == 1
    page.fill('input[name="repo"]', str(_repo(work)))
    page.fill('input[name="name"]', VM)
    page.select_option('select[name="image"]', SLIM)
    page.fill('input[name="vcpu"]', "1")
    page.fill('input[name="memory"]', "512M")
    page.select_option('select[name="net"]', "user")
    shot(page, "create")
    page.click('#create-form button[type="submit"]')
    page.wait_for_url(re.compile(r".*/ops/op-[0-9a-f]{8}$"))
    expect(page.locator("#stages li").first).to_have_attribute("data-stage", re.compile(".+"),
                                                               timeout=BOOT_MS)
    shot(page, "create-progress")
    page.wait_for_url(f"http://{listen}/vms/{VM}", timeout=BOOT_MS)  # the job led here
    expect(page.locator("#vm-state .state")).to_have_text("running")
    assert b.show(VM)["state"] == "running"

    # The terminal: a login shell in the VM over the websocket.
    page.click("#open-terminal")
    expect(page.locator("body")).to_have_attribute("data-terminal-state", "open",
                                                   timeout=30_000)
    page.locator(".xterm-helper-textarea").focus()
    page.keyboard.type("echo hi\n")
    _terminal_line(page, r"^hi\s*$")
    page.keyboard.type("cat /root/repo/marker.txt\n")  # the repo from the form was shipped
    _terminal_line(page, r"^local-change\s*$")
    shot(page, "terminal")
    # Resize: the pty follows the page (stty size reports the fitted rows and columns).
    page.keyboard.type("stty size\n")
    _terminal_line(page, r"^\d+ \d+\s*$")
    first = page.locator(".xterm-rows > div").filter(has_text=re.compile(r"^\d+ \d+\s*$"))
    before = first.first.inner_text().strip()
    page.set_viewport_size({"width": 800, "height": 600})
    page.keyboard.type("clear; stty size\n")
    wait_until(lambda: any(t.strip() != before and re.fullmatch(r"\d+ \d+", t.strip())
                           for t in first.all_inner_texts()),
               "stty size after the resize", 30, 0.2)
    page.keyboard.type("echo shell=$$\n")
    pid_line = page.locator(".xterm-rows > div").filter(has_text=re.compile(r"^shell=\d+\s*$"))
    expect(pid_line.first).to_be_visible(timeout=30_000)
    pid = pid_line.first.inner_text().strip().removeprefix("shell=")
    assert _alive(b, pid)  # the page's shell runs in the guest
    page.context.close()  # closing the page ends the shell
    wait_until(lambda: not _alive(b, pid), "the shell to end with the page", 30, 0.3)


def test_cross_origin_websocket_is_refused(ub: tuple[Banger, str], browser: Browser) -> None:
    b, listen = ub
    page = _logged_in(b, browser, listen)
    csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
    cookie = next(c["value"] for c in page.context.cookies() if c["name"] == "banger_session")
    url = f"ws://{listen}/vms/{VM}/terminal/ws?csrf={csrf}"

    def attempt(origin: str) -> int:
        try:
            with connect(url, origin=Origin(origin),
                         additional_headers={"Cookie": f"banger_session={cookie}"}):
                return 101
        except InvalidStatus as exc:
            return int(exc.response.status_code)

    assert attempt("http://evil.test") == 403
    assert attempt(f"http://{listen}") == 101  # the same request from the UI's own origin
    page.context.close()


def test_pull_an_image_with_progress_then_delete_it(ub: tuple[Banger, str], browser: Browser,
                                                    ref: str) -> None:
    b, listen = ub
    page = _logged_in(b, browser, listen)
    page.goto(f"http://{listen}/images")
    shot(page, "images")
    page.fill('#pull-image input[name="source"]', ref.removeprefix("docker://"))
    page.click('#pull-image button[type="submit"]')
    page.wait_for_url(re.compile(r".*/ops/op-[0-9a-f]{8}$"))
    expect(page.locator('#stages li[data-stage="download"]')).to_be_visible(timeout=PULL_MS)
    shot(page, "pull-progress")
    page.wait_for_url(f"http://{listen}/images", timeout=PULL_MS)
    row = page.locator("#images tr[data-image]").filter(has_text="oci:")
    expect(row).to_have_count(1)
    name = row.get_attribute("data-image")
    assert name and b.run("image", "show", name).returncode == 0
    row.locator("text=Delete…").click()
    page.click('button:has-text("Delete")')
    expect(page.locator(".error")).to_contain_text("Tick the box")
    shot(page, "confirm-delete-image")
    page.check('input[name="confirm"]')
    page.click('button:has-text("Delete")')
    page.wait_for_url(f"http://{listen}/images")
    expect(page.locator(f'#images tr[data-image="{name}"]')).to_have_count(0)
    assert b.run("image", "show", name).returncode == 1
    page.context.close()


def test_cancel_a_running_operation(ub: tuple[Banger, str], browser: Browser,
                                    stall: str) -> None:
    b, listen = ub
    page = _logged_in(b, browser, listen)
    page.goto(f"http://{listen}/images")
    page.fill('#pull-image input[name="source"]', f"{stall}/never/answers:v1")
    page.click('#pull-image button[type="submit"]')
    page.wait_for_url(re.compile(r".*/ops/op-[0-9a-f]{8}$"))
    op_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("#job-state")).to_have_text("running")
    page.goto(f"http://{listen}/ops")
    running = page.locator(f'tr[data-op="{op_id}"]')
    expect(running.locator(".state")).to_have_text("running")
    shot(page, "ops")
    running.locator('button:has-text("Cancel")').click()
    page.wait_for_url(f"http://{listen}/ops/{op_id}")
    expect(page.locator("#job-state")).to_have_text("cancelled", timeout=30_000)
    expect(page.locator(".error")).to_contain_text("cancelled from the web UI")
    shot(page, "op-cancelled")
    page.goto(f"http://{listen}/ops")
    expect(page.locator(f'tr[data-op="{op_id}"] .state')).to_have_text("cancelled")
    ops = b.run("daemon", "ops", check=True).stdout
    assert op_id in ops and "cancelled" in ops
    # A pull a CLI started is cancelled from the page too, as its Ctrl-C would.
    cli = b.popen("image", "pull", f"{stall}/never/answers:v2")
    row = page.locator("#ops tbody tr").filter(has_text="image.pull").filter(has_text="running")

    def listed() -> bool:
        page.goto(f"http://{listen}/ops")  # the page is not live: look again until it is there
        return row.count() == 1

    wait_until(listed, "the CLI's pull on the operations page", 30, 0.5)
    row.locator('button:has-text("Cancel")').click()
    _, err = cli.communicate(timeout=60)
    assert cli.returncode == 1 and "cancelled" in err, err
    page.context.close()
    _ = _free_port  # shared helper (keeps the import used when tests are deselected)
