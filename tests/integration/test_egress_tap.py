"""Egress rules for tap VMs: banger's nftables table in the bridge's namespace, the daemon's
resolver and host-alias proxy on the gateway. The allowed servers live in a namespace
tests/egress_env.py creates behind a veth from the bridge's (test-made) namespace; names come
from its zone on loopback. Nothing leaves the machine."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from collections.abc import Iterator

import pytest

from tests.conftest import Banger
from tests.egress_env import EgressLab, guest_http, guest_resolve
from tests.vmtest import SLIM, vm_home, vm_lock

pytestmark = [pytest.mark.vm, pytest.mark.network]
VM = "tg"
CIDR = "10.79.0.0/24"
GATEWAY = "10.79.0.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ip(*argv: str) -> str:
    return subprocess.run(["ip", *argv], capture_output=True, text=True, check=True,
                          timeout=30).stdout


@pytest.fixture(scope="module")
def tap_lab() -> Iterator[tuple[Banger, EgressLab, str]]:
    ns = f"bgt{os.getpid() % 100000}"
    _ip("netns", "add", ns)
    try:
        _ip("-n", ns, "link", "set", "lo", "up")
        with vm_lock(), EgressLab(host_ns=ns) as lab, vm_home(SLIM) as b:
            cfg = b.home / "config" / "config.toml"
            cfg.write_text(f'dns_listen = "127.0.0.1:{_free_port()}"\nnetwork_mode = "tap"\n'
                           f'netns = "{ns}"\nbridge_cidr = "{CIDR}"\n'
                           f'egress_upstream_dns = "127.0.0.1:{lab.dns_port}"\n'
                           + cfg.read_text())
            yield b, lab, ns
    finally:
        for pid in subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                                  text=True).stdout.split():
            os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def refused_fast(seen: str) -> bool:
    found = re.fullmatch(r"fail ConnectionRefusedError .* in ([0-9.]+)", seen)
    return found is not None and float(found.group(1)) < 2.0


def ruleset(ns: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "ruleset"],
                          capture_output=True, text=True, timeout=30).stdout


def test_tap_vm_reaches_only_its_rules(tap_lab: tuple[Banger, EgressLab, str]) -> None:
    b, lab, ns = tap_lab
    res = b.run("vm", "create", "--name", VM, "--allow", "pkg.test:8080",
                "--allow", f"host.banger.internal:{lab.host_port}", timeout=300)
    assert res.returncode == 0, res.stderr + b.log.read_text()[-3000:]
    shown = b.show(VM)
    assert shown["net_mode"] == "tap" and shown["egress"] == [
        "pkg.test:8080", f"host.banger.internal:{lab.host_port}"]
    assert guest_http(b, VM, "http://pkg.test:8080/") == "server-a-8080"
    assert (guest_http(b, VM, f"http://host.banger.internal:{lab.host_port}/")
            == f"host-loopback-{lab.host_port}")
    assert guest_resolve(b, VM, "host.banger.internal") == GATEWAY
    assert refused_fast(guest_http(b, VM, "http://pkg.test:8081/"))
    assert refused_fast(guest_http(b, VM, lab.url(lab.ip_b)))
    assert refused_fast(guest_http(b, VM, f"http://{GATEWAY}:{lab.host_other_port}/"))
    assert refused_fast(guest_http(b, VM, f"http://{lab.host_ip}:53/"))  # another resolver
    assert guest_resolve(b, VM, "other.test").startswith("fail")
    assert "other.test" not in lab.queries
    # Live: a rule added works at once, a rule removed refuses at once.
    b.run("vm", "set", VM, "--allow", "other.test:8080", check=True)
    assert guest_http(b, VM, "http://other.test:8080/") == "server-b-8080"
    b.run("vm", "set", VM, "--deny", "pkg.test:8080", check=True)
    assert guest_resolve(b, VM, "pkg.test").startswith("fail")
    assert refused_fast(guest_http(b, VM, lab.url(lab.ip_a)))
    log = b.run("vm", "logs", "--egress", VM, check=True).stdout
    for refused in ("dns  other.test", f"tcp  {lab.ip_a}:8081", f"tcp  {lab.ip_b}:8080",
                    f"tcp  host.banger.internal:{lab.host_other_port}"):
        assert refused in log, log
    # A restarted daemon points the rules at its new resolver and proxy.
    b.stop_daemon()
    assert guest_http(b, VM, "http://other.test:8080/") == "server-b-8080"
    vm_id = str(shown["id"])
    assert f"banger:{vm_id}:0:egress" in ruleset(ns)
    b.run("vm", "stop", VM, check=True, timeout=120)
    assert f"banger:{vm_id}" not in ruleset(ns)  # nothing of a stopped VM stays
    b.run("vm", "delete", VM, check=True)
