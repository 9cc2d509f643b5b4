"""Networking on real VMs: user mode (forwards, .vm DNS, ports) and tap mode inside test-made
network namespaces (gateway, DNS, NAT to an uplink namespace, cleanup after delete and crash).

Network rule: traffic goes only to loopback or into namespaces this file creates and deletes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from dnslib import DNSRecord

from tests.conftest import Banger
from tests.polling import process_runs, wait_until
from tests.vmtest import SLIM, vm_home, vm_lock

pytestmark = [pytest.mark.vm, pytest.mark.network]
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def configure(b: Banger, extra: str) -> int:
    dns_port = free_port()
    cfg = b.home / "config" / "config.toml"
    cfg.write_text(f'dns_listen = "127.0.0.1:{dns_port}"\nfast_start = false\n{extra}\n'
                   + cfg.read_text())
    return dns_port


def resolve(dns_port: int, name: str) -> tuple[int, list[str]]:
    reply = DNSRecord.parse(DNSRecord.question(name).send("127.0.0.1", dns_port, timeout=3))
    return reply.header.rcode, [str(rr.rdata) for rr in reply.rr]


def guest(b: Banger, vm: str, script: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return b.run("vm", "exec", vm, "--", "sh", "-c", script, timeout=timeout)


def guest_fetch(b: Banger, vm: str, url: str) -> str:
    code = (f"import urllib.request\ntry: print(urllib.request.urlopen('{url}', timeout=4).status)\n"
            "except Exception as e: print('fail', e)")
    return guest(b, vm, f"python3 -c \"{code}\"").stdout.strip()


def start_http(b: Banger, vm: str, port: int) -> None:
    res = guest(b, vm, f"cd /tmp && (nohup python3 -m http.server {port} >/dev/null 2>&1 &); "
                       f"for i in $(seq 50); do grep -q ':{port:04X} ' /proc/net/tcp* && exit 0; "
                       "sleep 0.2; done; exit 1")
    assert res.returncode == 0, res.stderr


def http_status(url: str) -> int | str:
    try:
        return int(urllib.request.urlopen(url, timeout=5).status)
    except Exception as exc:
        return str(exc)


def delete(b: Banger, name: str) -> None:
    res = b.run("vm", "delete", "-f", name)
    log = [line for line in b.log.read_text().splitlines() if "pyroute2" not in line]
    assert res.returncode == 0, res.stderr + "\n".join(log[-40:])


def vm_show(b: Banger, name: str) -> dict[str, object]:
    shown: dict[str, object] = json.loads(b.run("vm", "show", name, check=True).stdout)
    return shown


# ---------------------------------------------------------------- user mode


@pytest.fixture(scope="module")
def ub() -> Iterator[tuple[Banger, int]]:
    with vm_lock(), vm_home(SLIM) as b:
        yield b, configure(b, 'network_mode = "user"')


def test_user_mode_forward_dns_and_ports(ub: tuple[Banger, int]) -> None:
    b, dns_port = ub
    host_port = free_port()
    res = b.run("vm", "create", "--name", "web", "-p", f"{host_port}:8000", timeout=120)
    assert res.returncode == 0, res.stderr + b.log.read_text()[-3000:]
    info = vm_show(b, "web")
    assert info["net_mode"] == "user" and str(info["ip"]).startswith("127.77.")
    addr = guest(b, "web", "ip -4 -o addr show; cat /etc/resolv.conf").stdout
    assert "10.0.2.15/24" in addr and "nameserver 10.0.2.3" in addr
    start_http(b, "web", 8000)
    assert http_status(f"http://127.0.0.1:{host_port}/") == 200  # the published forward
    rcode, answers = resolve(dns_port, "web.vm")
    assert rcode == 0 and answers == [info["ip"]]
    assert http_status(f"http://{answers[0]}:8000/") == 200  # by its .vm address
    assert resolve(dns_port, "nosuch.vm")[0] == 3  # NXDOMAIN
    rows = json.loads(b.run("vm", "ports", "web", "--json", check=True).stdout)
    row = next(r for r in rows if r["port"] == 8000)
    assert row["proto"] == "tcp" and "http.server" in row["process"]
    assert row["endpoint"] == "web.vm:8000" and row["http"] is True
    table = b.run("vm", "ports", "web", check=True).stdout
    assert "web.vm:8000" in table and "yes" in table
    # A runtime forward, then a host port already in use.
    extra = free_port()
    b.run("vm", "forward", "web", f"{extra}:8000", check=True)
    assert http_status(f"http://127.0.0.1:{extra}/") == 200
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        res = b.run("vm", "forward", "web", f"{busy.getsockname()[1]}:8000")
        assert res.returncode != 0 and "already in use" in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
    b.run("vm", "stop", "web", check=True)
    assert resolve(dns_port, "web.vm")[0] == 3  # stopped: gone from DNS
    assert http_status(f"http://127.0.0.1:{host_port}/") != 200
    b.run("vm", "delete", "web", check=True)


@pytest.fixture
def host_loopback_http() -> Iterator[int]:
    """A web server on the host's 127.0.0.1 only: what a guest must not reach by default."""
    port = free_port()
    server = subprocess.Popen([PY, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while http_status(f"http://127.0.0.1:{port}/") != 200:
            assert time.monotonic() < deadline, "the host test server never answered"
            time.sleep(0.1)
        yield port
    finally:
        server.kill()
        server.wait()


def test_user_mode_guest_cannot_reach_host_loopback(ub: tuple[Banger, int],
                                                    host_loopback_http: int) -> None:
    # QEMU maps its user-mode gateway 10.0.2.2 to the host's 127.0.0.1; restrict=on refuses it.
    b, _ = ub
    b.run("vm", "create", "--name", "lo", timeout=120, check=True)
    try:
        seen = guest_fetch(b, "lo", f"http://10.0.2.2:{host_loopback_http}/")
        assert seen.startswith("fail") and "refused" in seen, seen
    finally:
        delete(b, "lo")


def test_user_nat_guest_cannot_reach_host_loopback(ub: tuple[Banger, int],
                                                   host_loopback_http: int) -> None:
    # With --nat QEMU's slirp is unrestricted: its gateway 10.0.2.2 must still not be the
    # host's 127.0.0.1 (other VMs' published ports, local databases, the daemon's DNS).
    b, _ = ub
    res = b.run("vm", "create", "--name", "natlo", "--nat", timeout=120)
    assert res.returncode == 0, res.stderr + b.log.read_text()[-3000:]
    try:
        started = time.monotonic()
        seen = guest_fetch(b, "natlo", f"http://10.0.2.2:{host_loopback_http}/")
        assert seen.startswith("fail") and "refused" in seen, seen
        assert time.monotonic() - started < 30  # refused, not a timeout
    finally:
        delete(b, "natlo")


def slirp_pids(vm_id: str) -> list[int]:
    """Live slirp4netns processes of this VM (their API socket is in its directory)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if cmdline.startswith(b"/usr/bin/slirp4netns") and vm_id.encode() in cmdline \
                and state != "Z":
            found.append(int(proc.name))
    return found


def wait_no_slirp(vm_id: str) -> list[int]:
    deadline = time.monotonic() + 5
    while slirp_pids(vm_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    return slirp_pids(vm_id)


def test_user_nat_forwards_work_and_nothing_is_left(ub: tuple[Banger, int]) -> None:
    b, _ = ub
    host_port = free_port()
    res = b.run("vm", "create", "--name", "natfw", "--nat", "-p", f"{host_port}:8000",
                timeout=120)
    assert res.returncode == 0, res.stderr + b.log.read_text()[-3000:]
    info = vm_show(b, "natfw")
    vm_id, loop = str(info["id"]), str(info["ip"])
    assert len(slirp_pids(vm_id)) == 1
    start_http(b, "natfw", 8000)
    assert http_status(f"http://127.0.0.1:{host_port}/") == 200  # the published port
    assert http_status(f"http://{loop}:8000/") == 200  # natfw.vm:8000
    extra = free_port()
    b.run("vm", "forward", "natfw", f"{extra}:8000", check=True)
    assert http_status(f"http://127.0.0.1:{extra}/") == 200
    start_http(b, "natfw", 8001)
    rows = json.loads(b.run("vm", "ports", "natfw", "--json", check=True).stdout)
    assert any(r["port"] == 8001 and r["endpoint"] == "natfw.vm:8001" and r["http"] for r in rows)
    assert http_status(f"http://{loop}:8001/") == 200
    # A daemon crash: the VM, its slirp4netns and its forwards live on and are re-adopted.
    daemon = b.daemon_pid()
    assert daemon
    os.kill(daemon, signal.SIGKILL)
    assert vm_show(b, "natfw")["state"] == "running"
    assert http_status(f"http://127.0.0.1:{host_port}/") == 200
    # Saved and resumed: a new QEMU, a new slirp4netns, the same forwards.
    b.run("vm", "stop", "--save", "natfw", check=True, timeout=120)
    assert slirp_pids(vm_id) == []
    assert http_status(f"http://127.0.0.1:{host_port}/") != 200
    b.run("vm", "start", "natfw", check=True, timeout=120)
    assert len(slirp_pids(vm_id)) == 1
    assert http_status(f"http://127.0.0.1:{extra}/") == 200
    b.run("vm", "stop", "natfw", check=True, timeout=120)
    assert slirp_pids(vm_id) == []
    vm_dir = b.home / "state" / "vms" / vm_id
    assert not (vm_dir / "slirp.sock").exists() and not (vm_dir / "slirp4netns.pid").exists()
    # A VMM killed while the daemon is down takes its slirp4netns with it.
    b.run("vm", "start", "--cold", "natfw", check=True, timeout=120)
    qemu_pid = int((vm_dir / "qemu.pid").read_text())
    daemon = b.daemon_pid()
    assert daemon
    os.kill(daemon, signal.SIGKILL)
    os.kill(qemu_pid, signal.SIGKILL)
    assert vm_show(b, "natfw")["state"] == "stopped"
    assert wait_no_slirp(vm_id) == []
    b.run("vm", "start", "natfw", check=True, timeout=120)
    delete(b, "natfw")
    assert slirp_pids(vm_id) == [] and not vm_dir.exists()
    assert http_status(f"http://127.0.0.1:{host_port}/") != 200


def test_user_mode_bad_input(ub: tuple[Banger, int]) -> None:
    b, _ = ub
    res = b.run("vm", "create", "--no-start", "--name", "bad", "-p", "80")
    assert res.returncode != 0 and "HOSTPORT:GUESTPORT" in res.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        res = b.run("vm", "create", "--name", "busy", "-p", f"{busy.getsockname()[1]}:80")
        assert res.returncode != 0 and "already in use" in res.stderr
    b.run("vm", "delete", "-f", "busy")


# ---------------------------------------------------------------- tap mode in a test netns


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=30)


@pytest.fixture(scope="module")
def netns() -> Iterator[tuple[str, str]]:
    """A namespace for bridge/taps/QEMU and an "uplink" namespace behind a veth pair."""
    tag = f"{os.getpid() % 100000}"
    ns, up = f"bgn{tag}", f"bgu{tag}"
    sh("ip", "netns", "add", ns)
    sh("ip", "netns", "add", up)
    try:
        sh("ip", "link", "add", "vbn" + tag, "netns", ns, "type", "veth", "peer", "name",
           "vbu" + tag, "netns", up)
        for space, dev, addr in ((ns, "vbn" + tag, "10.200.0.1/30"), (up, "vbu" + tag,
                                                                       "10.200.0.2/30")):
            sh("ip", "-n", space, "addr", "add", addr, "dev", dev)
            sh("ip", "-n", space, "link", "set", dev, "up")
            sh("ip", "-n", space, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "route", "add", "default", "via", "10.200.0.2")
        yield ns, up
    finally:
        sh("ip", "netns", "pids", ns, check=False)
        for space in (ns, up):
            for pid in sh("ip", "netns", "pids", space, check=False).stdout.split():
                os.kill(int(pid), signal.SIGKILL)
            sh("ip", "netns", "del", space, check=False)


def in_ns(ns: str, *argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, text=True)


def ns_fetch(ns: str, url: str) -> str:
    code = (f"import urllib.request\ntry: print(urllib.request.urlopen('{url}', timeout=4).status)\n"
            "except Exception as e: print('fail', e)")
    return sh("ip", "netns", "exec", ns, PY, "-c", code).stdout.strip()


def wait_listening(ns: str, url: str) -> None:
    deadline = time.monotonic() + 15
    while ns_fetch(ns, url) != "200":
        assert time.monotonic() < deadline, f"{url} never answered in {ns}"
        time.sleep(0.2)


def leftovers(ns: str, vm_id: str) -> list[str]:
    links = sh("ip", "-n", ns, "-o", "link").stdout
    rules = sh("ip", "netns", "exec", ns, "nft", "list", "ruleset").stdout
    found = [f"tap bt{vm_id}" for _ in [1] if f"bt{vm_id}" in links]
    return found + [f"nft rule for {vm_id}" for _ in [1] if f"banger:{vm_id}" in rules]


@pytest.fixture(scope="module")
def tb(netns: tuple[str, str]) -> Iterator[tuple[Banger, int, str, str]]:
    ns, up = netns
    with vm_lock(), vm_home(SLIM) as b:
        dns_port = configure(b, f'network_mode = "tap"\nnetns = "{ns}"\n'
                                'bridge_cidr = "10.77.0.0/24"')
        yield b, dns_port, ns, up


def test_tap_gateway_dns_and_nat(tb: tuple[Banger, int, str, str]) -> None:
    b, dns_port, ns, up = tb
    res = b.run("vm", "create", "--name", "tapa", "--nat", timeout=120)
    assert res.returncode == 0, res.stderr + b.log.read_text()[-3000:]
    info = vm_show(b, "tapa")
    assert info["net_mode"] == "tap" and info["ip"] == "10.77.0.2"
    gw = in_ns(ns, PY, "-m", "http.server", "9100", "--bind", "10.77.0.1")
    upl = in_ns(up, PY, "-m", "http.server", "9000", "--bind", "10.200.0.2")
    try:
        wait_listening(ns, "http://10.77.0.1:9100/")
        wait_listening(up, "http://10.200.0.2:9000/")
        assert guest_fetch(b, "tapa", "http://10.77.0.1:9100/") == "200"  # the gateway
        start_http(b, "tapa", 8000)
        rcode, answers = resolve(dns_port, "tapa.vm")
        assert rcode == 0 and answers == ["10.77.0.2"]
        assert ns_fetch(ns, f"http://{answers[0]}:8000/") == "200"  # a host client in the netns
        rows = json.loads(b.run("vm", "ports", "tapa", "--json", check=True).stdout)
        assert any(r["port"] == 8000 and r["endpoint"] == "tapa.vm:8000" and r["http"]
                   for r in rows)
        assert guest_fetch(b, "tapa", "http://10.200.0.2:9000/") == "200"  # NAT to the uplink
        res = b.run("vm", "create", "--name", "tapb", timeout=120)  # no --nat
        assert res.returncode == 0, res.stderr
        assert vm_show(b, "tapb")["ip"] == "10.77.0.3"
        assert guest_fetch(b, "tapb", "http://10.77.0.1:9100/") == "200"
        assert guest_fetch(b, "tapb", "http://10.200.0.2:9000/").startswith("fail")
        tapa_id = str(info["id"])
        b.run("vm", "stop", "tapa", check=True)
        assert leftovers(ns, tapa_id) == []
        b.run("vm", "start", "tapa", check=True, timeout=120)
        assert guest_fetch(b, "tapa", "http://10.200.0.2:9000/") == "200"
        delete(b, "tapa")
        assert leftovers(ns, tapa_id) == []
        delete(b, "tapb")
    finally:
        gw.kill()
        upl.kill()


def test_tap_crash_and_reconcile_leave_nothing(tb: tuple[Banger, int, str, str]) -> None:
    b, dns_port, ns, _ = tb
    host_port = free_port()
    res = b.run("vm", "create", "--name", "crash", "--nat", "-p", f"{host_port}:8000", timeout=120)
    assert res.returncode == 0, res.stderr
    vm_id = str(vm_show(b, "crash")["id"])
    start_http(b, "crash", 8000)
    assert http_status(f"http://127.0.0.1:{host_port}/") == 200  # daemon proxy into the netns
    assert leftovers(ns, vm_id) != []
    qemu_pid = int((b.home / "state" / "vms" / vm_id / "qemu.pid").read_text())
    daemon = b.daemon_pid()
    assert daemon
    os.kill(daemon, signal.SIGKILL)
    os.kill(qemu_pid, signal.SIGKILL)
    wait_until(lambda: not process_runs(daemon) and not process_runs(qemu_pid),
               "the killed daemon and QEMU to be gone")
    assert vm_show(b, "crash")["state"] == "stopped"  # the new daemon reconciled
    assert leftovers(ns, vm_id) == []
    assert http_status(f"http://127.0.0.1:{host_port}/") != 200
    assert resolve(dns_port, "crash.vm")[0] == 3
    b.run("vm", "delete", "crash", check=True)


def test_tap_bad_input(tb: tuple[Banger, int, str, str]) -> None:
    b, _, ns, _ = tb
    cfg = b.home / "config" / "config.toml"
    original = cfg.read_text()
    try:
        b.stop_daemon()
        cfg.write_text(original.replace('bridge_cidr = "10.77.0.0/24"',
                                        'bridge_cidr = "10.200.0.0/29"\nbridge_name = "br-clash"'))
        res = b.run("vm", "create", "--name", "overlap", timeout=120)
        assert res.returncode != 0 and "overlaps the existing route 10.200.0.0/30" in res.stderr
        assert "br-clash" not in sh("ip", "-n", ns, "-o", "link").stdout
        b.run("vm", "delete", "overlap")
        b.stop_daemon()
        cfg.write_text(original.replace('bridge_cidr = "10.77.0.0/24"',
                                        'bridge_cidr = "10.78.0.0/30"\nbridge_name = "br-tiny"'))
        b.run("vm", "create", "--no-start", "--name", "one", check=True)
        res = b.run("vm", "create", "--no-start", "--name", "two")
        assert res.returncode != 0 and "no free address left in bridge_cidr" in res.stderr
        b.run("vm", "delete", "one", check=True)
    finally:
        b.stop_daemon()
        cfg.write_text(original)


def test_tap_without_privilege_says_what_to_do(tmp_path: Path) -> None:
    """A daemon without CAP_NET_ADMIN (capsh drops it) and no root helper refuses tap mode in
    one line saying how to install the helper."""
    if not Path("/usr/sbin/capsh").exists() and not Path("/sbin/capsh").exists():
        pytest.skip("capsh not installed")
    code = ("from banger.net.admin import Bridge\nfrom banger.net.privileged import privileged_net\n"
            "privileged_net(Bridge('br-banger', '10.77.0.0/24')).bridge()")
    env = {**os.environ, "BANGER_ROOT_SOCKET": str(tmp_path / "none.sock")}
    res = subprocess.run(["capsh", "--drop=cap_net_admin", "--", "-c", f"{PY} -c \"{code}\""],
                         capture_output=True, text=True, env=env)
    last = res.stderr.strip().splitlines()[-1]
    assert res.returncode != 0 and "sudo banger system install" in last and "--net user" in last


DNS_SERVER = """
import sys
from dnslib import QTYPE, RR, A
from dnslib.server import BaseResolver, DNSServer
class Fixed(BaseResolver):
    def resolve(self, request, handler):
        reply = request.reply()
        reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A("10.200.0.99"), ttl=60))
        return reply
DNSServer(Fixed(), address=sys.argv[1], port=53).start()
"""


@pytest.fixture
def uplink_resolver(netns: tuple[str, str]) -> Iterator[None]:
    """`ip netns exec T` sees a resolv.conf naming a stub resolver on T's loopback, as with
    systemd-resolved (it answers 10.200.0.99)."""
    t_ns, _ = netns
    etc = Path("/etc/netns") / t_ns
    etc.mkdir(parents=True)
    (etc / "resolv.conf").write_text("nameserver 127.0.0.53\n")
    server = in_ns(t_ns, PY, "-c", DNS_SERVER, "127.0.0.53")
    try:
        yield
    finally:
        server.kill()
        (etc / "resolv.conf").unlink()
        etc.rmdir()


def test_user_nat_reaches_outside_but_not_its_hosts_loopback(netns: tuple[str, str],
                                                             uplink_resolver: None) -> None:
    """The daemon (so QEMU and slirp4netns) runs in namespace T with a veth to uplink U: the
    guest reaches U's web server and T's stub resolver through slirp4netns, never a server on
    T's own 127.0.0.1."""
    t_ns, u_ns = netns
    lo_port = free_port()
    with vm_lock(), vm_home(SLIM) as b:
        cfg = b.home / "config" / "config.toml"
        cfg.write_text(f'dns_listen = "127.0.0.1:{free_port()}"\nnetwork_mode = "user"\n'
                       + cfg.read_text())  # fast start on: the clone is restored with --nat
        uplink = in_ns(u_ns, PY, "-m", "http.server", "9000", "--bind", "10.200.0.2")
        local = in_ns(t_ns, PY, "-m", "http.server", str(lo_port), "--bind", "127.0.0.1")
        try:
            wait_listening(u_ns, "http://10.200.0.2:9000/")
            wait_listening(t_ns, f"http://127.0.0.1:{lo_port}/")
            res = subprocess.run(["ip", "netns", "exec", t_ns, str(Path(PY).parent / "banger"),
                                  "vm", "create", "--name", "outside", "--nat"],
                                 env=b.env, capture_output=True, text=True, timeout=300)
            assert res.returncode == 0, res.stderr + b.log.read_text()[-3000:]
            events = [str(e["message"]) for e in b.show("outside")["events"]]
            assert any(m.startswith("started from template") for m in events), events
            assert guest_fetch(b, "outside", "http://10.200.0.2:9000/") == "200"
            lookup = guest(b, "outside", "python3 -c \"import socket; "
                                         "print(socket.gethostbyname('probe.example'))\"")
            # QEMU's slirp asks slirp4netns, which asks the host's loopback stub resolver.
            assert lookup.stdout.strip() == "10.200.0.99", lookup.stderr
            seen = guest_fetch(b, "outside", f"http://10.0.2.2:{lo_port}/")
            assert seen.startswith("fail") and "refused" in seen, seen
            delete(b, "outside")
        finally:
            uplink.kill()
            local.kill()


# ---------------------------------------------------------------- ssh (default image: has sshd)


def known_host(file: Path, alias: str) -> bool:
    return subprocess.run(["ssh-keygen", "-F", alias, "-f", str(file)], capture_output=True
                          ).returncode == 0


def plain_ssh_and_scp(b: Banger, name: str, tmp_path: Path) -> None:
    """The `banger ssh-config` block alone makes `ssh NAME.vm` and scp work: nothing on this
    host resolves `.vm`, so they go through its ProxyCommand."""
    config = tmp_path / f"ssh_config_{name}"
    config.write_text(b.run("ssh-config", check=True).stdout)
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(300_000))
    scp = subprocess.run(["scp", "-F", str(config), str(payload), f"{name}.vm:/tmp/p.bin"],
                         env=b.env, capture_output=True, text=True, timeout=120)
    assert scp.returncode == 0, scp.stderr
    res = subprocess.run(["ssh", "-F", str(config), f"{name}.vm", "sha256sum /tmp/p.bin; hostname"],
                         env=b.env, capture_output=True, text=True, timeout=120)
    digest = subprocess.run(["sha256sum", str(payload)], capture_output=True, text=True).stdout
    assert res.returncode == 0, res.stderr
    assert res.stdout.split()[0] == digest.split()[0] and res.stdout.split()[-1] == name
    res = subprocess.run(["ssh", "-F", str(config), "ghost.vm", "true"], env=b.env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 255 and "ghost" in res.stderr, res.stderr


def test_vm_ssh_in_both_modes(netns: tuple[str, str], tmp_path: Path) -> None:
    ns, _ = netns
    with vm_lock(), vm_home(SLIM, "debian-bookworm") as b:
        configure(b, f'netns = "{ns}"\nbridge_cidr = "10.77.0.0/24"')
        known = b.home / "state" / "ssh" / "known_hosts"
        host_keys = []
        for name, mode in (("sshuser", "user"), ("sshtap", "tap")):
            res = b.run("vm", "create", "--name", name, "--image", "debian-bookworm", "--net", mode,
                        "--memory", "1G", timeout=180)
            assert res.returncode == 0, res.stderr
            # `vm ssh` waits for sshd, which starts once the VM has its own host key.
            res = b.run("vm", "ssh", name, "--", "hostname; ls /etc/ssh | grep -c ssh_host_",
                        timeout=60)
            assert res.returncode == 0 and res.stdout.split() == [name, "2"], res.stderr
            assert known_host(known, f"{name}.vm")  # trusted on first use
            host_keys.append(known.read_text().split()[-1])
            plain_ssh_and_scp(b, name, tmp_path)
            delete(b, name)
            assert not known_host(known, f"{name}.vm")  # forgotten on delete
        assert host_keys[0] != host_keys[1]  # the second is a clone of the first's template


def test_ssh_config_install_is_idempotent(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "HOME": str(home), "BANGER_HOME": str(tmp_path / "bh")}
    banger = [str(Path(PY).parent / "banger"), "ssh-config"]
    block = subprocess.run(banger, env=env, capture_output=True, text=True, check=True).stdout
    assert block.startswith("Host *.vm") and "StrictHostKeyChecking accept-new" in block
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text("Host other\n    User me\n")
    for _ in range(2):
        subprocess.run([*banger, "--install"], env=env, check=True, capture_output=True)
    text = (home / ".ssh" / "config").read_text()
    assert text.count("Include ") == 1 and text.index("Include") < text.index("Host other")
    subprocess.run([*banger, "--uninstall"], env=env, check=True, capture_output=True)
    assert (home / ".ssh" / "config").read_text() == "Host other\n    User me\n"
