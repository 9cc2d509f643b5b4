"""The egress VM's DNS: allowed names are resolved upstream on the host, everything else is
NXDOMAIN and logged. What an allowed name resolved to is what the firewall then lets through.

Only A queries are forwarded (these VMs have no IPv6); other types get an empty answer, so the
guest cannot use DNS itself as a channel to names it may not reach.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import typing
from collections.abc import Awaitable, Callable
from pathlib import Path

from dnslib import OPCODE, QTYPE, RCODE, RR, A, DNSRecord

from banger.net.egress.rules import HOST_ALIAS, HOST_ALIAS_ADDRESS, Policy, usable_from_name

log = logging.getLogger("banger.net.egress")
MAX_QUERY = 4096
MAX_ADDRESSES = 32
MAX_TTL = 300
UPSTREAM_TIMEOUT = 3.0
# (name, addresses) -> after the firewall lets them through; the answer waits for it.
Grant = Callable[[str, list[str]], Awaitable[None]]
Deny = Callable[[str], None]


def upstream_server(configured: str, resolv_conf: Path = Path("/etc/resolv.conf")
                    ) -> tuple[str, int]:
    """`egress_upstream_dns` (ADDRESS[:PORT]) or the host's first nameserver."""
    if configured:
        host, sep, port = configured.partition(":")
        return host, int(port) if sep else 53
    try:
        lines = resolv_conf.read_text().splitlines()
    except OSError:
        lines = []
    servers = [line.split()[1] for line in lines
               if line.startswith("nameserver") and len(line.split()) > 1]
    ipv4 = [server for server in servers if server.count(".") == 3 and ":" not in server]
    return (ipv4[0] if ipv4 else "127.0.0.1"), 53  # the resolver forwards over IPv4


def _reply(request: DNSRecord, rcode: int = RCODE.NOERROR) -> DNSRecord:
    reply = request.reply()
    reply.header.rcode = rcode
    return reply


def _forward(name: str, server: tuple[str, int]) -> DNSRecord:
    packet = DNSRecord.question(name, "A").send(server[0], server[1], timeout=UPSTREAM_TIMEOUT)
    return DNSRecord.parse(packet[:MAX_QUERY])


class Resolver:
    def __init__(self, policy: Callable[[], Policy], server: tuple[str, int], grant: Grant,
                 deny: Deny) -> None:
        self.policy = policy
        self.server = server
        self.grant = grant
        self.deny = deny

    async def answer(self, query: bytes) -> bytes | None:
        """The reply to one datagram from the guest; None for garbage and responses."""
        try:
            request = DNSRecord.parse(query[:MAX_QUERY])
        except Exception:  # dnslib raises several types for garbage
            return None
        if request.header.qr or len(request.questions) != 1:
            return None
        if request.header.opcode != OPCODE.QUERY:
            return bytes(_reply(request, RCODE.NOTIMP).pack())
        name = str(request.q.qname).lower().rstrip(".")
        try:
            return bytes((await self._resolve(request, name)).pack())
        except Exception as exc:  # the upstream failing must not take the gate down
            log.info("egress DNS for %r failed: %s", name, exc)
            return bytes(_reply(request, RCODE.SERVFAIL).pack())

    async def _resolve(self, request: DNSRecord, name: str) -> DNSRecord:
        if self.policy().ports_for_name(name) is None:
            self.deny(name)
            return _reply(request, RCODE.NXDOMAIN)
        reply = _reply(request)
        if request.q.qtype != QTYPE.A:
            return reply  # allowed, but only A: no IPv6, no other record types
        if name == HOST_ALIAS:
            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(HOST_ALIAS_ADDRESS), ttl=60))
            return reply
        upstream = await asyncio.to_thread(_forward, name, self.server)
        if upstream.header.rcode != RCODE.NOERROR:
            return _reply(request, upstream.header.rcode)
        records = [rr for rr in upstream.rr if rr.rtype in (QTYPE.A, QTYPE.CNAME)]
        addresses = [str(rr.rdata) for rr in records if rr.rtype == QTYPE.A
                     and usable_from_name(ipaddress.IPv4Address(str(rr.rdata)))]
        addresses = list(dict.fromkeys(addresses))[:MAX_ADDRESSES]
        await self.grant(name, addresses)
        for rr in records:
            if rr.rtype == QTYPE.CNAME or str(rr.rdata) in addresses:
                rr.ttl = min(rr.ttl, MAX_TTL)
                reply.add_answer(rr)
        return reply


class DnsProtocol(asyncio.DatagramProtocol):
    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if len(self.pending) >= 64:  # a flood waits for answers instead of piling up tasks
            return
        task = asyncio.get_running_loop().create_task(self._answer(data, addr))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _answer(self, data: bytes, addr: tuple[str | object, int]) -> None:
        reply = await self.resolver.answer(data)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def close(self) -> None:
        for task in self.pending:
            task.cancel()
        if self.transport is not None:
            self.transport.close()
