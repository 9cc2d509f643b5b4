"""Tap networking for a normal user, end to end: the user's daemon, QEMU and VM, a tap made by
bangerd-root and owned by the user, and a TCP connection from the guest to the host's bridge.

Network rule: the helper, the user's daemon and its VM all live in a network namespace this
file creates and deletes; nothing reaches the host's own links. Root runs the helper (as
`system install` would), the test user is in the helper's group for the test only, and
/dev/net/tun is opened to users for the test (Debian's default mode; some hosts tighten it).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from banger.net.privileged import SOCKET_ENV
from tests.integration.test_unprivileged import cache  # noqa: F401  # the user's kernel and image
from tests.polling import wait_until
from tests.unpriv import USER, UserBanger, as_root, tun_open_to_users, user_banger, user_dir
from tests.vmtest import SLIM, vm_lock

pytestmark = [pytest.mark.vm, pytest.mark.network,
              pytest.mark.skipif(not as_root(), reason="root starts the helper and the namespace")]

CIDR = "10.78.0.0/24"
GATEWAY = "10.78.0.1"
BRIDGE = "br-bgtap"


def sh(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


@dataclass
class TapWorld:
    netns: str
    banger: UserBanger

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """The CLI as the test user inside the namespace (its daemon starts there too)."""
        env = ["env", "-i", *(f"{k}={v}" for k, v in self.banger.env.items())]
        argv = ["ip", "netns", "exec", self.netns, "runuser", "-u", USER, "--", *env,
                str(self.banger.bindir / "banger"), *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)

    def links(self) -> list[dict[str, object]]:
        found: list[dict[str, object]] = json.loads(
            sh("ip", "-n", self.netns, "-d", "-j", "link", "show"))
        return found


@pytest.fixture
def tun_for_users() -> Iterator[None]:
    with tun_open_to_users():
        yield


@pytest.fixture
def world(cache: Path, tun_for_users: None) -> Iterator[TapWorld]:  # noqa: F811
    netns, group = f"bgu{secrets.token_hex(3)}", f"bgu{secrets.token_hex(3)}"
    work = Path(tempfile.mkdtemp(prefix="bangerd-root-"))
    work.chmod(0o755)  # the user must reach the socket
    (work / "root.toml").write_text(f'bridge_name = "{BRIDGE}"\nbridge_cidr = "{CIDR}"\n'
                                    f'group = "{group}"\n')
    sh("groupadd", group)
    sh("usermod", "-aG", group, USER)
    sh("ip", "netns", "add", netns)
    sh("ip", "-n", netns, "link", "set", "lo", "up")
    with open(work / "helper.log", "wb") as log:
        helper = subprocess.Popen(["ip", "netns", "exec", netns,
                                   str(Path(sys.executable).parent / "bangerd-root"),
                                   "--socket", str(work / "root.sock"),
                                   "--config", str(work / "root.toml")],
                                  stdout=log, stderr=subprocess.STDOUT)
    home = user_dir("bt-")
    b = user_banger(home)
    b.env[SOCKET_ENV] = str(work / "root.sock")
    b.run_argv(["mkdir", "-p", f"{home}/state", f"{home}/config"], check=True)
    for sub in ("kernels", "images"):
        b.run_argv(["ln", "-s", f"{cache}/state/{sub}", f"{home}/state/{sub}"], check=True)
    config = (f'default_image = "{SLIM}"\nbridge_name = "{BRIDGE}"\nbridge_cidr = "{CIDR}"\n'
              '[vm_defaults]\nvcpu = 1\nmemory = "1G"\ndisk = "4G"\n')
    b.run_argv(["sh", "-c", f"cat > {home}/config/config.toml"], input=config, check=True)
    tw = TapWorld(netns, b)
    try:
        wait_until(lambda: (work / "root.sock").exists() or helper.poll() is not None,
                   "the root helper's socket")
        assert helper.poll() is None, (work / "helper.log").read_text()
        with vm_lock():
            yield tw
    finally:
        listed = tw.run("vm", "list", "--json").stdout or "[]"
        for vm in json.loads(listed):
            tw.run("vm", "delete", "-f", vm["name"], timeout=60)
        tw.run("daemon", "stop")
        helper.terminate()
        helper.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", netns], check=False)
        subprocess.run(["gpasswd", "-d", USER, group], capture_output=True, check=False)
        subprocess.run(["groupdel", group], check=False)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


LISTENER = """
import socket, sys
server = socket.create_server((sys.argv[1], 0))
print(server.getsockname()[1], flush=True)
conn, _ = server.accept()
print(conn.recv(64).decode(), flush=True)
"""


def test_a_users_tap_vm_reaches_the_bridge_through_the_helper(world: TapWorld) -> None:
    made = world.run("vm", "create", "--name", "tapper", "--net", "tap")
    assert made.returncode == 0, made.stderr
    uid = int(sh("id", "-u", USER))
    daemon_pid = (world.banger.home / "run" / "bangerd.lock").read_text().strip()
    status = Path(f"/proc/{daemon_pid}/status").read_text()
    assert f"Uid:\t{uid}\t" in status  # the user's own daemon, no privilege
    taps = [link for link in world.links() if str(link["ifname"]).startswith("bt")]
    assert len(taps) == 1
    assert taps[0]["master"] == BRIDGE
    assert taps[0]["linkinfo"]["info_data"]["user"] == USER  # type: ignore[index]
    shown_res = world.run("vm", "show", "tapper")
    assert shown_res.returncode == 0, shown_res.stderr
    shown = json.loads(shown_res.stdout)
    address = shown["ip"]
    assert address.startswith("10.78.0.")

    # The guest connects to a listener on the bridge address, in the namespace.
    listener = subprocess.Popen(["ip", "netns", "exec", world.netns, sys.executable, "-c",
                                 LISTENER, GATEWAY], stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout is not None
        port = int(listener.stdout.readline())
        hello = (f"import socket; s = socket.create_connection(('{GATEWAY}', {port}), "
                 "timeout=10); s.sendall(b'from ' + socket.gethostname().encode())")
        res = world.run("vm", "exec", "tapper", "--", "python3", "-c", hello)
        assert res.returncode == 0, res.stderr
        assert listener.stdout.readline().strip() == "from tapper"
    finally:
        listener.kill()
        listener.wait()

    deleted = world.run("vm", "delete", "-f", "tapper")
    assert deleted.returncode == 0, deleted.stderr
    assert not [link for link in world.links() if str(link["ifname"]).startswith("bt")]


GUEST_GET = ("import sys, urllib.request\ntry: print(urllib.request.urlopen(sys.argv[1], "
             "timeout=5).status)\nexcept Exception as e: print('fail', type(getattr(e, 'reason', "
             "e)).__name__)")


def test_a_users_tap_vm_with_egress_rules_through_the_helper(world: TapWorld) -> None:
    """The helper loads the VM's rules for the user's daemon; the daemon serves the VM's DNS and
    host alias on the bridge's gateway, unprivileged."""
    port = 18000 + os.getpid() % 1000
    server = subprocess.Popen(["ip", "netns", "exec", world.netns, sys.executable, "-m",
                               "http.server", "--bind", "127.0.0.1", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        made = world.run("vm", "create", "--name", "tapeg", "--net", "tap", "--allow",
                         f"host.banger.internal:{port}", timeout=300)
        assert made.returncode == 0, made.stderr

        def get(url: str) -> str:
            return world.run("vm", "exec", "tapeg", "--", "python3", "-c", GUEST_GET,
                             url).stdout.strip()

        wait_until(lambda: get(f"http://host.banger.internal:{port}/") == "200",
                   "the host's loopback server through the helper's rules")
        assert get(f"http://host.banger.internal:{port + 1}/") == "fail ConnectionRefusedError"
        assert get(f"http://{GATEWAY}:{port}/") == "200"  # the alias is the gateway
        log = world.run("vm", "logs", "--egress", "tapeg").stdout
        assert f"host.banger.internal:{port + 1}" in log, log
        world.run("vm", "set", "tapeg", "--deny", f"host.banger.internal:{port}")
        assert get(f"http://{GATEWAY}:{port}/") == "fail ConnectionRefusedError"
        vm_id = json.loads(world.run("vm", "show", "tapeg").stdout)["id"]
        world.run("vm", "delete", "-f", "tapeg", timeout=120)
        rules = sh("ip", "netns", "exec", world.netns, "nft", "list", "ruleset")
        assert f"banger:{vm_id}" not in rules
    finally:
        server.kill()
        server.wait()
