"""One egress VM's gate in the daemon: its resolver, its host-alias proxy, the firewall's sets,
and the log of what was refused. Gates live while their VM runs; a restarted daemon opens
them again (the firewall itself lives in the VM's namespace and never goes away before it)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import socket
import struct
import time
from pathlib import Path

import msgspec

from banger.errors import BangerError
from banger.net.egress import firewall
from banger.net.egress.nsfd import GateSockets, open_gate_sockets
from banger.net.egress.resolver import MAX_ADDRESSES, DnsProtocol, Resolver
from banger.net.egress.rules import HOST_ALIAS, Policy
from banger.net.forward import splice

log = logging.getLogger("banger.net.egress")
SO_ORIGINAL_DST = 80
HOST_LOOPBACK = "127.0.0.1"
CONNECT_TIMEOUT = 5.0
POLL_S = 5.0  # how often the firewall's refusals are copied into the log
MAX_LOG_ENTRIES = 10_000
MAX_NAMES = 4096


class Denial(msgspec.Struct, frozen=True):
    time: str
    kind: str  # "dns" | "tcp" | "udp"
    target: str  # a name, or ADDRESS:PORT (the host alias by its name)


def resolved_file(vm_dir: Path) -> Path:
    return vm_dir / "egress-resolved.json"


def log_file(vm_dir: Path) -> Path:
    return vm_dir / "egress.log"


def load_resolved(vm_dir: Path) -> dict[str, list[str]]:
    """What the VM's names resolved to so far (kept across a daemon restart, not a VM restart)."""
    try:
        data = msgspec.json.decode(resolved_file(vm_dir).read_bytes(),
                                   type=dict[str, list[str]])
    except (OSError, msgspec.DecodeError):
        return {}
    return {name: [a for a in addrs[:MAX_ADDRESSES] if _ipv4(a)]
            for name, addrs in list(data.items())[:MAX_NAMES]}


def _ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def read_log(vm_dir: Path) -> list[Denial]:
    try:
        lines = log_file(vm_dir).read_bytes().splitlines()[:MAX_LOG_ENTRIES]
    except OSError:
        return []
    found = []
    for line in lines:
        with contextlib.suppress(msgspec.DecodeError):
            found.append(msgspec.json.decode(line, type=Denial))
    return found


def _target(address: str, port: int) -> str:
    return f"{HOST_ALIAS if address == HOST_LOOPBACK else address}:{port}"


class Gate:
    def __init__(self, vm_dir: Path, pid: int, policy: Policy, upstream: tuple[str, int]) -> None:
        self.vm_dir = vm_dir
        self.pid = pid
        self.policy = policy
        self.resolved = load_resolved(vm_dir)
        self.resolver = Resolver(lambda: self.policy, upstream, self._grant, self._deny_name)
        self.seen = {(d.kind, d.target) for d in read_log(vm_dir)}
        self.lock = asyncio.Lock()
        self.sockets: GateSockets | None = None
        self.dns: DnsProtocol | None = None
        self.server: asyncio.Server | None = None
        self.poller: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Serve DNS and the host alias in the namespace, and bring the firewall up to date."""
        await self.apply()
        self.sockets = await open_gate_sockets(self.pid)
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_datagram_endpoint(lambda: DnsProtocol(self.resolver),
                                                          sock=self.sockets.dns)
        self.dns = protocol
        self.server = await asyncio.start_server(self._proxy, sock=self.sockets.proxy)
        self.poller = loop.create_task(self._poll())

    async def apply(self) -> None:
        async with self.lock:
            await firewall.apply(self.pid, firewall.update(self.policy, self.resolved))

    async def set_policy(self, policy: Policy) -> None:
        self.policy = policy
        await self.apply()

    async def _grant(self, name: str, addresses: list[str]) -> None:
        known = self.resolved.get(name, [])
        if set(addresses) <= set(known):
            return
        if name not in self.resolved and len(self.resolved) >= MAX_NAMES:
            raise BangerError(f"too many names resolved in this VM ({MAX_NAMES})")
        self.resolved[name] = list(dict.fromkeys([*addresses, *known]))[:MAX_ADDRESSES]
        resolved_file(self.vm_dir).write_bytes(msgspec.json.encode(self.resolved))
        await self.apply()

    def _deny_name(self, name: str) -> None:
        self._record("dns", name)

    def _record(self, kind: str, target: str) -> None:
        if (kind, target) in self.seen or len(self.seen) >= MAX_LOG_ENTRIES:
            return
        self.seen.add((kind, target))
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with open(log_file(self.vm_dir), "ab") as out:
            out.write(msgspec.json.encode(Denial(stamp, kind, target)) + b"\n")
        log.info("egress refused %s %s", kind, json.dumps(target))

    async def collect(self) -> None:
        """Copy the firewall's refusals into the log."""
        for address, proto, port in await firewall.denied(self.pid):
            self._record(proto, _target(address, port))

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            try:
                await self.collect()
            except BangerError as exc:  # QEMU gone: the VM is stopping
                log.debug("egress log not read: %s", exc)

    async def _proxy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A guest connection to host.banger.internal:PORT, redirected here by the firewall."""
        sock: socket.socket = writer.get_extra_info("socket")
        try:
            raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
            port = struct.unpack_from("!H", raw, 2)[0]
        except OSError:
            writer.close()
            return
        if port not in self.policy.host_ports():  # a rule removed after the redirect
            self._record("tcp", f"{HOST_ALIAS}:{port}")
            _reset(sock, writer)
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(HOST_LOOPBACK, port), CONNECT_TIMEOUT)
        except (OSError, TimeoutError):
            _reset(sock, writer)
            return
        await splice(reader, writer, up_reader, up_writer)

    def close(self) -> None:
        if self.poller is not None:
            self.poller.cancel()
        if self.server is not None:
            self.server.close()
        if self.dns is not None:
            self.dns.close()
        if self.sockets is not None:
            self.sockets.close()


def _reset(sock: socket.socket, writer: asyncio.StreamWriter) -> None:
    """Close with a reset, so the guest sees a refusal and not an empty reply."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()
