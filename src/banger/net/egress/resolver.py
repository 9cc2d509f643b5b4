"""The egress VM's DNS: allowed names are resolved upstream on the host, everything else is
NXDOMAIN and logged. What an allowed name resolved to is what the firewall then lets through.

Only A queries are forwarded (these VMs have no IPv6); other types get an empty answer, so the
guest cannot use DNS itself as a channel to names it may not reach.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import typing
from collections.abc import Awaitable, Callable
from pathlib import Path

from dnslib import OPCODE, QTYPE, RCODE, RR, A, DNSRecord

from banger.egress_rules import (
    HOST_ALIAS,
    HOST_ALIAS_ADDRESS,
    Policy,
    is_ipv4,
    parse_upstream,
    usable_from_name,
)
from banger.net.plan import RESOLV_CONF, nameservers

log = logging.getLogger("banger.net.egress")
MAX_QUERY = 4096
MAX_ADDRESSES = 32
MAX_TTL = 300
UPSTREAM_TIMEOUT = 3.0
MAX_PENDING = 64  # queries in flight per VM
UPSTREAM_PARALLEL = 4  # per VM: a guest asking many names at once waits for its own answers
# (name, addresses) -> after the firewall lets them through; the answer waits for it.
Grant = Callable[[str, list[str]], Awaitable[None]]
Deny = Callable[[str], None]


def upstream_server(configured: str, resolv_conf: Path = RESOLV_CONF) -> tuple[str, int]:
    """`egress_upstream_dns` (ADDRESS[:PORT]) or the host's first IPv4 nameserver."""
    if configured:
        return parse_upstream(configured)
    ipv4 = [server for server in nameservers(resolv_conf) if is_ipv4(server)]
    return (ipv4[0] if ipv4 else "127.0.0.1"), 53  # the resolver forwards over IPv4


def _reply(request: DNSRecord, rcode: int = RCODE.NOERROR) -> DNSRecord:
    reply = request.reply()
    reply.header.rcode = rcode
    return reply


class _Upstream(asyncio.DatagramProtocol):
    """One query on a socket connected to the upstream: the kernel drops datagrams from any
    other address, and only the answer to this id and question is taken."""

    def __init__(self, query: DNSRecord) -> None:
        self.query = query
        self.answer: asyncio.Future[DNSRecord] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        try:
            reply = DNSRecord.parse(data[:MAX_QUERY])
        except Exception:  # dnslib raises several types for garbage
            return
        if (reply.header.qr and reply.header.id == self.query.header.id
                and len(reply.questions) == 1 and reply.q.qtype == self.query.q.qtype
                and str(reply.q.qname).lower() == str(self.query.q.qname).lower()
                and not self.answer.done()):
            self.answer.set_result(reply)


async def _forward(name: str, server: tuple[str, int]) -> DNSRecord:
    query = DNSRecord.question(name, "A")
    query.header.id = secrets.randbelow(1 << 16)
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(lambda: _Upstream(query),
                                                              remote_addr=server)
    try:
        transport.sendto(bytes(query.pack()))
        return await asyncio.wait_for(protocol.answer, UPSTREAM_TIMEOUT)
    finally:
        transport.close()


class Resolver:
    def __init__(self, policy: Callable[[], Policy], server: tuple[str, int], grant: Grant,
                 deny: Deny, alias: str = HOST_ALIAS_ADDRESS) -> None:
        self.policy = policy
        self.server = server
        self.grant = grant
        self.deny = deny
        self.alias = alias  # where host.banger.internal points in this VM's network
        self.upstream_slots = asyncio.Semaphore(UPSTREAM_PARALLEL)

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
            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(self.alias), ttl=60))
            return reply
        async with self.upstream_slots:
            upstream = await _forward(name, self.server)
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
    """Queries in, answers out; which VM's resolver answers depends on the sender (one VM per
    socket in user mode; tap VMs share one socket and are told apart by address)."""

    def __init__(self, resolver_for: Callable[[str], Resolver | None]) -> None:
        self.resolver_for = resolver_for
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: dict[str, set[asyncio.Task[None]]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        source = str(addr[0])
        resolver = self.resolver_for(source)
        tasks = self.pending.setdefault(source, set())
        if resolver is None or len(tasks) >= MAX_PENDING:
            return  # a flood waits for its own answers instead of piling up tasks
        task = asyncio.get_running_loop().create_task(self._answer(resolver, data, addr))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _answer(self, resolver: Resolver, data: bytes,
                      addr: tuple[str | object, int]) -> None:
        reply = await resolver.answer(data)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def close(self) -> None:
        for tasks in self.pending.values():
            for task in tasks:
                task.cancel()
        if self.transport is not None:
            self.transport.close()
