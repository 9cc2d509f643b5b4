"""Egress policy on real VMs (user mode): `--allow` rules reach exactly what they name, the
rest is refused at once and listed by `vm logs --egress`; rules change live.

Network rule: the guest's allowed servers live in a namespace tests/egress_env.py creates and
deletes, names come from its DNS zone on loopback, and the host alias reaches loopback servers.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Banger
from tests.egress_env import EgressLab, guest_http, guest_resolve
from tests.vmtest import SLIM, vm_home, vm_lock

pytestmark = [pytest.mark.vm, pytest.mark.network]
VM = "eg"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def lab_home() -> Iterator[tuple[Banger, EgressLab]]:
    with vm_lock(), EgressLab() as lab, vm_home(SLIM) as b:
        cfg = b.home / "config" / "config.toml"
        cfg.write_text(f'dns_listen = "127.0.0.1:{_free_port()}"\nnetwork_mode = "user"\n'
                       f'egress_upstream_dns = "127.0.0.1:{lab.dns_port}"\n' + cfg.read_text())
        yield b, lab


def refused_fast(seen: str) -> bool:
    """A connection refused at once, not a timeout (guest_http's timeout is 5 s)."""
    found = re.fullmatch(r"fail ConnectionRefusedError .* in ([0-9.]+)", seen)
    return found is not None and float(found.group(1)) < 2.0


def one_line_error(res: object) -> str:
    stderr = getattr(res, "stderr", "")
    assert getattr(res, "returncode", 0) != 0, stderr
    return str(stderr).strip()


def test_allowed_names_and_ports_work_and_everything_else_is_refused(
        lab_home: tuple[Banger, EgressLab]) -> None:
    b, lab = lab_home
    res = b.run("vm", "create", "--name", VM, "--allow", "pkg.test:8080",
                "--allow", "*.wild.test:8080", "--allow", f"host.banger.internal:{lab.host_port}",
                timeout=300)
    assert res.returncode == 0, res.stderr + b.log.read_text()[-3000:]
    shown = b.show(VM)
    assert shown["egress"] == ["pkg.test:8080", "*.wild.test:8080",
                               f"host.banger.internal:{lab.host_port}"]
    qemu = int((b.home / "state" / "vms" / shown["id"] / "qemu.pid").read_text())
    status = Path(f"/proc/{qemu}/status").read_text()  # it cannot touch its namespace's filter
    assert "CapEff:\t0000000000000000" in status and "NoNewPrivs:\t1" in status, status
    # Allowed: a name and its port, a wildcard, the host's loopback on its port.
    assert guest_http(b, VM, "http://pkg.test:8080/") == "server-a-8080"
    assert guest_http(b, VM, "http://a.wild.test:8080/") == "server-a-8080"
    assert (guest_http(b, VM, f"http://host.banger.internal:{lab.host_port}/")
            == f"host-loopback-{lab.host_port}")
    # Refused at once: another port of an allowed name, an IP literal, another host port.
    assert refused_fast(guest_http(b, VM, "http://pkg.test:8081/"))
    assert refused_fast(guest_http(b, VM, lab.url(lab.ip_b)))
    assert refused_fast(guest_http(b, VM, f"http://10.0.2.2:{lab.host_other_port}/"))
    # Another name does not resolve, and never reaches the upstream server.
    assert guest_resolve(b, VM, "other.test").startswith("fail")
    assert "other.test" not in lab.queries
    assert guest_resolve(b, VM, "pkg.test") == lab.ip_a
    # Another DNS server is just another address: refused.
    assert refused_fast(guest_http(b, VM, f"http://{lab.host_ip}:53/"))
    log = b.run("vm", "logs", "--egress", VM, check=True).stdout
    for refused in ("dns  other.test", f"tcp  {lab.ip_a}:8081", f"tcp  {lab.ip_b}:8080",
                    f"tcp  host.banger.internal:{lab.host_other_port}"):
        assert refused in log, log


def test_rules_change_live_and_survive_restarts(lab_home: tuple[Banger, EgressLab]) -> None:
    b, lab = lab_home
    assert guest_resolve(b, VM, "other.test").startswith("fail")
    res = b.run("vm", "set", VM, "--allow", "other.test:8080", check=True)
    assert "other.test:8080" in res.stdout
    assert guest_http(b, VM, "http://other.test:8080/") == "server-b-8080"
    b.run("vm", "set", VM, "--deny", f"host.banger.internal:{lab.host_port}", "--deny",
          "pkg.test:8080", check=True)
    assert refused_fast(guest_http(b, VM, f"http://10.0.2.2:{lab.host_port}/"))
    assert guest_resolve(b, VM, "pkg.test").startswith("fail")
    assert "no egress rule" in one_line_error(b.run("vm", "set", VM, "--deny", "nosuch.test"))
    # A restarted daemon opens the gate again; a restarted VM keeps its rules.
    b.stop_daemon()
    assert guest_http(b, VM, "http://other.test:8080/") == "server-b-8080"
    b.run("vm", "restart", VM, check=True, timeout=300)
    assert guest_http(b, VM, "http://other.test:8080/") == "server-b-8080"
    assert refused_fast(guest_http(b, VM, lab.url(lab.ip_a)))
    b.run("vm", "delete", "-f", VM, check=True)


def test_no_rules_means_no_egress_and_bad_rules_are_one_line(
        lab_home: tuple[Banger, EgressLab]) -> None:
    b, lab = lab_home
    b.run("vm", "create", "--name", "none", timeout=300, check=True)
    assert b.show("none")["egress"] == []
    assert guest_resolve(b, "none", "pkg.test").startswith("fail")
    assert guest_http(b, "none", lab.url(lab.ip_a)).startswith("fail")
    b.run("vm", "delete", "-f", "none", check=True)
    for args, words in ((["--allow", "pkg.test", "--nat"], "--nat"),
                        (["--allow", "127.0.0.1:80"], "host.banger.internal"),
                        (["--allow", "host.banger.internal"], "needs a port"),
                        (["--allow", "[::1]:80"], "IPv6")):
        err = one_line_error(b.run("vm", "create", "--name", "bad", "--no-start", *args))
        assert words in err, err
    assert b.run("vm", "show", "bad").returncode != 0  # nothing was made
