"""Egress-policy test lab: HTTP servers in a test-made netns behind a veth, a fake upstream DNS
and HTTP servers on the host's loopback, plus guest-side probes. Network rule: traffic goes only
to loopback or into the namespace EgressLab creates and deletes."""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import itertools
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from dnslib import CNAME, QTYPE, RCODE, RR, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from tests.polling import wait_until

PORT, OTHER_PORT = 8080, 8081


class Runs(Protocol):
    """A banger CLI to run: tests.conftest.Banger, or tests.unpriv.UserBanger as the test user."""

    def run(self, *args: str, timeout: float = ..., input: str | None = ...,
            check: bool = ...) -> subprocess.CompletedProcess[str]: ...
_labs = itertools.count()

# Runs inside the namespace: answers every GET with argv[3] as the body.
_NS_SERVER = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
body = sys.argv[3].encode() + b"\\n"
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    log_message = lambda *a: None
ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
"""


def _ip(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *argv], capture_output=True, text=True, check=check, timeout=30)


def _free_subnet() -> ipaddress.IPv4Network:
    """The first 10.2xx.0.0/24 from 10.203 on that no route of this host overlaps."""
    routes = []
    for line in _ip("-4", "route", "show", "table", "all").stdout.splitlines():
        words = line.split() or ["default"]
        dest = words[1] if words[0].isalpha() and words[0] != "default" else words[0]
        if dest[0].isdigit():  # "default" and friends overlap everything: skipped
            routes.append(ipaddress.ip_network(dest, strict=False))
    for second in [*range(203, 250), *range(200, 203)]:
        net = ipaddress.IPv4Network(f"10.{second}.0.0/24")
        if not any(net.overlaps(r) for r in routes):
            return net
    raise RuntimeError("no free 10.2xx.0.0/24 on this host")


class _Zone(BaseResolver):  # type: ignore[misc]
    """pkg.test, other.test, a.wild.test (A), cname.test (CNAME to pkg.test); else NXDOMAIN."""

    def __init__(self, a: str, b: str, queries: list[str]) -> None:
        self.a_records = {"pkg.test": a, "other.test": b, "a.wild.test": a}
        self.queries = queries

    def resolve(self, request: Any, handler: Any) -> Any:
        reply, owner = request.reply(), request.q.qname
        name = str(owner).rstrip(".").lower()
        self.queries.append(name)
        if name == "cname.test" and request.q.qtype == QTYPE.A:
            reply.add_answer(RR(owner, QTYPE.CNAME, ttl=30, rdata=CNAME("pkg.test.")))
            owner, name = "pkg.test.", "pkg.test"
        if name not in self.a_records and name != "cname.test":
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype == QTYPE.A:
            reply.add_answer(RR(owner, QTYPE.A, ttl=30, rdata=A(self.a_records[name])))
        return reply  # AAAA and other types of known names: NOERROR, no records


class _HostHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"host-loopback-{self.request.getsockname()[1]}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class EgressLab:
    """`with EgressLab() as lab:` (root). Netns servers answer GET / with `lab.bodies[url]`:
    "server-a-8080" (ip_a:8080, allowed), "server-a-8081" (ip_a:8081, other port),
    "server-b-8080" (ip_b:8080, other address); host loopback ones with "host-loopback-<port>"."""

    def __init__(self, host_ns: str = "") -> None:
        """host_ns: where the veth's host side goes (a tap test's bridge namespace), not the
        root namespace."""
        n = next(_labs)
        self.host_ns = host_ns
        self.ns = f"bgr-egress-{os.getpid()}" + (f"-{n}" if n else "")
        self.host_if = f"bge{os.getpid() % 100000}" + (f"x{n}" if n else "")
        self.peer_if = "bgp" + self.host_if[3:]
        self.subnet = ipaddress.IPv4Network("10.203.0.0/24")  # chosen for real in __enter__
        self.host_ip = self.ip_a = self.ip_b = ""
        self.port, self.other_port = PORT, OTHER_PORT
        self.bodies: dict[str, str] = {}  # URL of each netns server -> its body's first line
        self.dns_port = self.host_port = self.host_other_port = 0
        self.queries: list[str] = []  # names asked of the DNS server, lowercase, no final dot
        self._procs: dict[str, subprocess.Popen[bytes]] = {}  # by body
        self._dns: list[DNSServer] = []
        self._http: list[ThreadingHTTPServer] = []

    def url(self, ip: str, port: int = PORT) -> str:
        return f"http://{ip}:{port}/"

    def __enter__(self) -> EgressLab:
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _setup(self) -> None:
        self.subnet = _free_subnet()
        self.host_ip, self.ip_a, self.ip_b = host, a, b = [str(self.subnet[i]) for i in (1, 2, 3)]
        _ip("netns", "add", self.ns)
        on_host = ["-n", self.host_ns] if self.host_ns else []
        _ip(*on_host, "link", "add", self.host_if, "type", "veth", "peer", "name", self.peer_if,
            "netns", self.ns)
        _ip(*on_host, "addr", "add", f"{host}/24", "dev", self.host_if)
        _ip(*on_host, "link", "set", self.host_if, "up")
        for addr in (a, b):
            _ip("-n", self.ns, "addr", "add", f"{addr}/24", "dev", self.peer_if)
        _ip("-n", self.ns, "link", "set", self.peer_if, "up")
        _ip("-n", self.ns, "link", "set", "lo", "up")
        servers = {(a, PORT): "server-a-8080", (a, OTHER_PORT): "server-a-8081",
                   (b, PORT): "server-b-8080"}
        self.bodies = {self.url(ip, port): body for (ip, port), body in servers.items()}
        for (ip, port), body in servers.items():
            self._procs[body] = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, sys.executable, "-c", _NS_SERVER, ip, str(port),
                 body], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._start_dns()
        for _ in range(2):
            srv = ThreadingHTTPServer(("127.0.0.1", 0), _HostHandler)
            threading.Thread(target=srv.serve_forever, daemon=True).start()
            self._http.append(srv)
        self.host_port, self.host_other_port = (int(s.server_address[1]) for s in self._http)
        for url, body in {**self.bodies, **{f"http://127.0.0.1:{p}/": f"host-loopback-{p}"
                                            for p in (self.host_port, self.host_other_port)}}.items():
            wait_until(functools.partial(self._answers, url, body), f"{url} to serve", 15, 0.05)

    def _start_dns(self) -> None:
        """UDP on a free port, TCP on the same port (retried if another socket holds it)."""
        zone, quiet = _Zone(self.ip_a, self.ip_b, self.queries), DNSLogger(logf=lambda _: None)
        for _ in range(20):
            udp = DNSServer(zone, address="127.0.0.1", port=0, logger=quiet)
            port = int(udp.server.server_address[1])
            self._dns.append(udp)
            try:
                self._dns.append(DNSServer(zone, address="127.0.0.1", port=port, tcp=True,
                                           logger=quiet))
            except OSError:
                self._dns.pop().server.server_close()
                continue
            for srv in self._dns:
                srv.start_thread()
            self.dns_port = port
            return
        raise RuntimeError("no free port for both UDP and TCP DNS")

    def _answers(self, url: str, body: str) -> bool:
        dead = [name for name, p in self._procs.items() if p.poll() is not None]
        if dead:
            raise RuntimeError(f"egress lab server exited: {dead}")
        if self.host_ns and "127.0.0.1" not in url:  # the lab is reached from host_ns only
            code = ("import sys, urllib.request\ntry: print(urllib.request.urlopen(sys.argv[1], "
                    "timeout=1).read().decode().strip())\nexcept OSError: pass")
            got = subprocess.run(["ip", "netns", "exec", self.host_ns, sys.executable, "-c", code,
                                  url], capture_output=True, text=True, timeout=10).stdout
            return got.strip() == body
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                return bool(r.read().decode().strip() == body)
        except OSError:
            return False

    def close(self) -> None:
        """Idempotent: stops every server and removes the namespace and veth."""
        for srv in self._dns:
            if getattr(srv, "thread", None):  # shutdown() of a server never started would hang
                srv.stop()
            srv.server.server_close()
        for http in self._http:
            http.shutdown()
            http.server_close()
        self._dns, self._http = [], []
        for proc in self._procs.values():
            proc.kill()
            proc.wait()
        self._procs = {}
        for pid in _ip("netns", "pids", self.ns, check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        _ip("netns", "del", self.ns, check=False)  # takes the peer and so the veth pair with it
        _ip(*(["-n", self.host_ns] if self.host_ns else []), "link", "del", self.host_if,
            check=False)


# Runs in the guest: GET argv[1] with timeout argv[2]; a failure names the underlying error.
_HTTP = """
import sys, time, urllib.error, urllib.request
start = time.monotonic()
try:
    with urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])) as r:
        lines = r.read().decode(errors="replace").splitlines()
    print(lines[0] if lines else "")
except Exception as e:
    err = e.reason if isinstance(e, urllib.error.URLError) and \\
        isinstance(e.reason, BaseException) else e
    msg = " ".join(str(err).split())
    print(f"fail {type(err).__name__} {msg} in {time.monotonic() - start:.2f}")
"""

_RESOLVE = """
import socket, sys
try:
    infos = socket.getaddrinfo(sys.argv[1], None, type=socket.SOCK_STREAM)
    print(" ".join(sorted({i[4][0] for i in infos if i[0] == socket.AF_INET})))
except Exception as e:
    print("fail", " ".join(str(e).split()))
"""


def _guest_py(b: Runs, vm: str, code: str, *args: str, timeout: float) -> str:
    res = b.run("vm", "exec", vm, "--", "python3", "-c", code, *args, timeout=timeout + 60)
    if res.returncode != 0:
        raise AssertionError(f"vm exec {vm} python3 -> {res.returncode}\n{res.stderr}")
    return res.stdout.strip()


def guest_http(b: Runs, vm: str, url: str, timeout: float = 5) -> str:
    """The body's first line, or `fail <ErrorClass> <message> in <seconds>` (a URLError is
    unwrapped: ConnectionRefusedError, TimeoutError, gaierror, ...; HTTPError stays)."""
    return _guest_py(b, vm, _HTTP, url, str(timeout), timeout=timeout)


def guest_resolve(b: Runs, vm: str, name: str) -> str:
    """The guest's getaddrinfo IPv4 answers, sorted and space-separated (AAAA is asked too but
    not printed; "" if none), or `fail <message>`."""
    return _guest_py(b, vm, _RESOLVE, name, timeout=10)
