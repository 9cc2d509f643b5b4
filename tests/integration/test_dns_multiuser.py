""".vm for several users on one host: each user writes its zone file into a shared sticky dir,
bangerd-dns runs as a third unprivileged identity (nobody) and answers NAME.vm and NAME.USER.vm;
a real dnsmasq in front of it resolves through the file `banger system install` renders.

Run as root (CI): the users are made once (bdns-alice, bdns-bob); they run banger from the
world-readable test venv (tests/unpriv.py).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from dnslib import RCODE, DNSRecord

from banger.roothelper.resolver import render_dnsmasq
from tests.polling import wait_until
from tests.unpriv import ensure_venv

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="makes users and runs as each of them")
USERS = ("bdns-alice", "bdns-bob")
WRITE = ("import json, os, sys; from pathlib import Path; from banger.dns.zones import write_zone;"
         " write_zone(Path(sys.argv[1]), os.geteuid(), json.loads(sys.argv[2]))")


def ensure_users() -> None:
    for user in USERS:
        try:
            pwd.getpwnam(user)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                            "/usr/sbin/nologin", user], check=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ask(port: int, name: str, timeout: float = 2.0) -> DNSRecord | None:
    query = DNSRecord.question(name)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(bytes(query.pack()), ("127.0.0.1", port))
            return DNSRecord.parse(s.recv(512))
        except OSError:  # refused (not listening yet) or timed out
            return None


def addresses(reply: DNSRecord | None) -> list[str]:
    return [str(rr.rdata) for rr in reply.rr] if reply is not None else []


@pytest.fixture(scope="module")
def venv() -> Path:
    ensure_users()
    return ensure_venv()


@pytest.fixture
def zone_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bdns-zone-", dir="/tmp"))
    path.chmod(0o1777)  # stands in for root:banger 1775 with both users in group banger
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def dns(venv: Path, zone_dir: Path) -> Iterator[int]:
    """bangerd-dns as nobody on a free port, answering from zone_dir."""
    port = free_port()
    proc = subprocess.Popen(["runuser", "-u", "nobody", "--", str(venv / "bangerd-dns"),
                             "--listen", f"127.0.0.1:{port}", "--zone-dir", str(zone_dir)],
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: ask(port, "vm.", 0.2) is not None, "bangerd-dns to answer")
        yield port
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
        print(err)


def publish(venv: Path, zone_dir: Path, user: str, vms: dict[str, str]) -> None:
    subprocess.run(["runuser", "-u", user, "--", str(venv / "python"), "-c", WRITE,
                    str(zone_dir), json.dumps(vms)], check=True, timeout=60)


def test_two_users_names_and_the_ambiguity_rule(venv: Path, zone_dir: Path, dns: int) -> None:
    alice, bob = USERS
    publish(venv, zone_dir, alice, {"web": "127.81.232.2", "same": "127.81.232.3"})
    publish(venv, zone_dir, bob, {"db": "127.81.233.2", "same": "127.81.233.3"})
    wait_until(lambda: addresses(ask(dns, "db.vm")) == ["127.81.233.2"], "bob's db.vm")
    assert addresses(ask(dns, "web.vm")) == ["127.81.232.2"]
    same = ask(dns, "same.vm")
    assert same is not None and same.header.rcode == RCODE.NXDOMAIN and not same.rr
    assert addresses(ask(dns, f"same.{alice}.vm")) == ["127.81.232.3"]
    assert addresses(ask(dns, f"same.{bob}.vm")) == ["127.81.233.3"]
    assert addresses(ask(dns, f"web.{bob}.vm")) == []
    # bob cannot pose as alice: a file named after her uid but owned by him is ignored
    alice_uid = pwd.getpwnam(alice).pw_uid
    (zone_dir / f"{alice_uid}.json").unlink()
    evil = ("import os; fd = os.open(f'{os.sys.argv[1]}/{os.sys.argv[2]}.json', "
            "os.O_WRONLY | os.O_CREAT, 0o644); os.write(fd, b'{\"vms\": {\"web\": \"1.2.3.4\"}}')")
    subprocess.run(["runuser", "-u", bob, "--", str(venv / "python"), "-c", evil, str(zone_dir),
                    str(alice_uid)], check=True)
    wait_until(lambda: addresses(ask(dns, "same.vm")) == ["127.81.233.3"],
               "same.vm to be bob's alone once alice's file is gone")
    assert addresses(ask(dns, "web.vm")) == [] and addresses(ask(dns, f"web.{alice}.vm")) == []


def test_dnsmasq_in_front_resolves_name_vm(venv: Path, zone_dir: Path, dns: int,
                                           tmp_path: Path) -> None:
    if shutil.which("dnsmasq") is None:
        pytest.skip("dnsmasq not installed (apt-get install dnsmasq-base, or `make install`)")
    alice = USERS[0]
    publish(venv, zone_dir, alice, {"web": "127.81.232.2"})
    conf = tmp_path / "banger.conf"
    conf.write_text(render_dnsmasq(f"127.0.0.1:{dns}"))
    port = free_port()
    proc = subprocess.Popen(["dnsmasq", "--keep-in-foreground", f"--port={port}",
                             "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv",
                             "--no-hosts", "--pid-file=", f"--conf-file={conf}"],
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: addresses(ask(port, "web.vm", 0.2)) == ["127.81.232.2"],
                   "web.vm through dnsmasq")
        assert addresses(ask(port, f"web.{alice}.vm")) == ["127.81.232.2"]
        nope = ask(port, "nope.vm")
        assert nope is not None and nope.header.rcode == RCODE.NXDOMAIN
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


@pytest.mark.vm
def test_a_real_daemon_publishes_its_vm_for_bangerd_dns(zone_dir: Path, dns: int) -> None:
    """A daemon with the zone dir present binds no DNS port and publishes its VM while it runs."""
    from tests.vmtest import SLIM, vm_home, vm_lock

    with vm_lock(), vm_home(SLIM) as b:
        own_port = free_port()
        cfg = b.home / "config" / "config.toml"
        cfg.write_text(f'dns_listen = "127.0.0.1:{own_port}"\nfast_start = false\n'
                       'network_mode = "user"\n' + cfg.read_text())
        b.env["BANGER_ZONE_DIR"] = str(zone_dir)
        res = b.run("vm", "create", "--name", "web", timeout=180)
        assert res.returncode == 0, res.stderr + b.log.read_text()[-3000:]
        ip = str(b.show("web")["ip"])
        me = pwd.getpwuid(os.geteuid()).pw_name
        wait_until(lambda: addresses(ask(dns, "web.vm")) == [ip], "web.vm from bangerd-dns")
        assert addresses(ask(dns, f"web.{me}.vm")) == [ip]
        assert ask(own_port, "web.vm", 0.3) is None  # the daemon's own listener is not there
        b.run("vm", "stop", "web", check=True, timeout=120)
        wait_until(lambda: (r := ask(dns, "web.vm")) is not None
                   and r.header.rcode == RCODE.NXDOMAIN, "web.vm gone once stopped")
        b.stop_daemon()
        assert not (zone_dir / f"{os.geteuid()}.json").exists()
