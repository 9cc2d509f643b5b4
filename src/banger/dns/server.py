"""Authoritative DNS for `<name>.vm` (dnslib), answering from the VM store on every query.

Looking names up live keeps answers right across start, stop and rename with no registration.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from dnslib import QTYPE, RCODE, RR, SOA, DNSRecord

log = logging.getLogger("banger.dns")
ZONE = "vm"
TTL = 5
Lookup = Callable[[str], str | None]


def answer(query: bytes, lookup: Lookup) -> bytes | None:
    try:
        request = DNSRecord.parse(query)
    except Exception:  # dnslib raises several types for garbage
        return None
    reply = request.reply()
    reply.header.aa = 1
    qname = str(request.q.qname).rstrip(".").lower()
    labels = qname.split(".")
    if labels[-1] != ZONE:
        reply.header.rcode = RCODE.REFUSED
        return bytes(reply.pack())
    address = lookup(labels[0]) if len(labels) == 2 else None
    if len(labels) == 1:
        _soa(reply)  # the zone apex
    elif address is None:
        reply.header.rcode = RCODE.NXDOMAIN
        _soa(reply)
    elif request.q.qtype in (QTYPE.A, QTYPE.ANY):
        reply.add_answer(*RR.fromZone(f"{qname}. {TTL} IN A {address}"))
    else:
        _soa(reply)  # the name exists but has no record of this type
    return bytes(reply.pack())


def _soa(reply: DNSRecord) -> None:
    reply.add_auth(RR(f"{ZONE}.", QTYPE.SOA, ttl=TTL,
                      rdata=SOA("ns.vm.", "hostmaster.vm.", (1, 60, 60, 60, TTL))))


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, lookup: Lookup) -> None:
        self.lookup = lookup
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram transport here

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = answer(data, self.lookup)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


async def serve(listen: str, lookup: Lookup) -> asyncio.DatagramTransport | None:
    """Start answering on HOST:PORT (UDP); a busy port is logged, not fatal for the daemon."""
    host, _, port = listen.rpartition(":")
    loop = asyncio.get_running_loop()
    try:
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(lookup),
                                                           local_addr=(host, int(port)))
    except OSError as exc:
        log.warning("DNS for .vm not served: cannot listen on %s: %s", listen, exc.strerror)
        return None
    log.info("DNS for .vm on %s/udp", listen)
    return transport
