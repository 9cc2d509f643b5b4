"""One egress VM's gate in the daemon: its policy, its resolver, its host-alias proxy, and the
log of what was refused. The packet filter itself is a Wall: nftables in the VM's own namespace
(user mode) or in banger's table through the root helper (tap)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
import logging
import socket
import struct
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import msgspec

from banger.egress_rules import HOST_ALIAS, HOST_ALIAS_ADDRESS, Policy, is_ipv4
from banger.errors import BangerError, OperationFailed
from banger.net.egress.nftset import MAX_ELEMENTS, Allowed, allowed
from banger.net.egress.resolver import MAX_ADDRESSES, Resolver
from banger.net.forward import splice

log = logging.getLogger("banger.net.egress")
SO_ORIGINAL_DST = 80
HOST_LOOPBACK = "127.0.0.1"
CONNECT_TIMEOUT = 5.0
POLL_S = 5.0  # how often the firewall's refusals are copied into the log
MAX_LOG_ENTRIES = 10_000
MAX_NAMES = 4096
MAX_PROXIED = 128  # host-alias connections open at once, per VM


class Wall(Protocol):
    """Where a gate's packet filter lives."""

    async def fill(self, allow: Allowed) -> None: ...  # the sets say exactly this
    async def grant(self, allow: Allowed) -> None: ...  # add these
    async def denied(self) -> list[tuple[str, str, int]]: ...


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
    return {name: [a for a in addrs[:MAX_ADDRESSES] if is_ipv4(a)]
            for name, addrs in list(data.items())[:MAX_NAMES]}


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


class Gate:
    def __init__(self, vm_dir: Path, wall: Wall, policy: Policy, upstream: tuple[str, int], *,
                 alias: str = HOST_ALIAS_ADDRESS, alias_seen_as: str = HOST_LOOPBACK,
                 blocked: Sequence[ipaddress.IPv4Network] = ()) -> None:
        self.vm_dir = vm_dir
        self.wall = wall
        self.policy = policy
        self.blocked = tuple(blocked)
        self.alias_seen_as = alias_seen_as  # the host alias's address in the filter's view
        self.resolved = load_resolved(vm_dir)
        self.resolver = Resolver(lambda: self.policy, upstream, self._grant,
                                 functools.partial(self._record, "dns"), alias)
        self.seen = {(d.kind, d.target) for d in read_log(vm_dir)}
        self.lock = asyncio.Lock()
        self.proxied: dict[asyncio.StreamWriter, int] = {}  # open host-alias connections: port
        self.poller: asyncio.Task[None] | None = None

    async def start(self, *, fill: bool = True) -> None:
        """Copy the filter's refusals into the log from now on; `fill` first brings the filter
        up to date (a tap VM's rules were just loaded with everything: no need)."""
        if fill:
            await self.set_policy(self.policy)
        self.poller = asyncio.get_running_loop().create_task(self._poll())

    async def set_policy(self, policy: Policy) -> None:
        """The filter first: the resolver and proxy follow only once it holds."""
        async with self.lock:
            await self.wall.fill(allowed(policy, self.resolved, self.blocked))
            self.policy = policy
        for writer, port in list(self.proxied.items()):
            if port not in policy.host_ports():  # a removed rule ends what it let through
                _reset(writer)

    async def _grant(self, name: str, addresses: list[str]) -> None:
        known = self.resolved.get(name, [])
        if set(addresses) <= set(known):
            return
        if name not in self.resolved and len(self.resolved) >= MAX_NAMES:
            raise OperationFailed(f"too many names resolved in this VM ({MAX_NAMES})")
        merged = list(dict.fromkeys([*addresses, *known]))[:MAX_ADDRESSES]
        async with self.lock:
            grown = {**self.resolved, name: merged}
            if allowed(self.policy, grown, self.blocked).size() > MAX_ELEMENTS:
                self._record("dns", name)
                raise OperationFailed(f"this VM's names resolved to more than {MAX_ELEMENTS} "
                                      "addresses and ports")
            await self.wall.grant(allowed(self.policy, {name: merged}, self.blocked))
            self.resolved = grown
            resolved_file(self.vm_dir).write_bytes(msgspec.json.encode(self.resolved))

    def _record(self, kind: str, target: str) -> None:
        if (kind, target) in self.seen or len(self.seen) >= MAX_LOG_ENTRIES:
            return
        self.seen.add((kind, target))
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with open(log_file(self.vm_dir), "ab") as out:
            out.write(msgspec.json.encode(Denial(stamp, kind, target)) + b"\n")
        log.info("egress refused %s %s", kind, json.dumps(target))

    async def collect(self) -> None:
        """Copy the filter's refusals into the log."""
        for address, proto, port in await self.wall.denied():
            shown = HOST_ALIAS if address == self.alias_seen_as else address
            self._record(proto, f"{shown}:{port}")

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            try:
                await self.collect()
            except BangerError as exc:  # QEMU gone: the VM is stopping
                log.debug("egress log not read: %s", exc)

    async def proxy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    port: int) -> None:
        """A guest connection to host.banger.internal:PORT, redirected here by the filter."""
        if port not in self.policy.host_ports() or len(self.proxied) >= MAX_PROXIED:
            self._record("tcp", f"{HOST_ALIAS}:{port}")
            _reset(writer)
            return
        self.proxied[writer] = port
        try:
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection(HOST_LOOPBACK, port), CONNECT_TIMEOUT)
            except (OSError, TimeoutError):
                _reset(writer)
                return
            await splice(reader, writer, up_reader, up_writer)
        finally:
            self.proxied.pop(writer, None)

    def close(self) -> None:
        if self.poller is not None:
            self.poller.cancel()
        for writer in list(self.proxied):
            _reset(writer)


def original_port(writer: asyncio.StreamWriter) -> int | None:
    """The port a redirected connection was meant for (the filter's NAT keeps it)."""
    sock: socket.socket = writer.get_extra_info("socket")
    try:
        raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    except OSError:
        return None
    return int(struct.unpack_from("!H", raw, 2)[0])


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a reset, so the guest sees a refusal and not an empty reply."""
    sock: socket.socket | None = writer.get_extra_info("socket")
    with contextlib.suppress(OSError):
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()
