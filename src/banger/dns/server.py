"""Authoritative DNS for `<name>.vm` (dnslib), answering from the VM store on every query.

Looking names up live keeps answers right across start, stop and rename with no registration.
The same answering serves bangerd-dns (dns/zone_server.py), whose names have a user label too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from dnslib import OPCODE, QTYPE, RCODE, RR, SOA, A, DNSHeader, DNSRecord

from banger.errors import BangerError
from banger.vms.model import validate_name

log = logging.getLogger("banger.dns")
ZONE = "vm"
TTL = 5
Lookup = Callable[[str], str | None]  # one VM name -> its address (a user's own daemon)
PathLookup = Callable[[list[str]], str | None]  # the labels before `.vm`, leftmost first


MAX_NAME = 255  # bytes on the wire (RFC 1035); longer names are malformed


def single(lookup: Lookup) -> PathLookup:
    """A one-label lookup (`NAME.vm`, NAME a valid VM name) as a path lookup."""
    return lambda labels: (lookup(labels[0]) if len(labels) == 1 and is_vm_name(labels[0])
                           else None)


def answer(query: bytes, lookup: Lookup) -> bytes | None:
    """The reply to one packet, or None: garbage and responses are never answered."""
    return answer_path(query, single(lookup))


def answer_path(query: bytes, lookup: PathLookup) -> bytes | None:
    """`answer` for names of any depth under `.vm`; `lookup` validates its labels itself."""
    try:
        request = DNSRecord.parse(query)
    except Exception:  # dnslib raises several types for garbage
        return None
    if request.header.qr:
        return None  # a response: answering could loop between two servers
    if request.header.opcode != OPCODE.QUERY:
        return _error(request, RCODE.NOTIMP)
    labels = request.q.qname.label
    if len(request.questions) != 1 or sum(len(label) + 1 for label in labels) + 1 > MAX_NAME:
        return _error(request, RCODE.FORMERR)
    reply = request.reply()
    reply.header.aa = 1
    try:
        _resolve(request, [_text(label) for label in labels], reply, lookup)
    except Exception:  # the store failing must not take the answer (or the loop) down
        log.warning("DNS lookup failed", exc_info=True)
        return _error(request, RCODE.SERVFAIL, question=True)
    return bytes(reply.pack())


def _text(label: bytes) -> str:
    return label.decode("ascii", "replace").lower()


def _resolve(request: DNSRecord, labels: list[str], reply: DNSRecord,
             lookup: PathLookup) -> None:
    if labels[-1:] != [ZONE]:
        reply.header.rcode = RCODE.REFUSED
        return
    if len(labels) == 1:
        _soa(reply)  # the zone apex
        return
    address = lookup(labels[:-1])
    if address is None:
        reply.header.rcode = RCODE.NXDOMAIN
        _soa(reply)
    elif request.q.qtype in (QTYPE.A, QTYPE.ANY):
        reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(address), ttl=TTL))
    else:
        _soa(reply)  # the name exists but has no record of this type


def is_vm_name(label: str) -> bool:
    try:
        validate_name(label)
    except BangerError:
        return False
    return True


def _error(request: DNSRecord, rcode: int, *, question: bool = False) -> bytes:
    """A bare error reply; the question is echoed only when it was well formed."""
    header = DNSHeader(id=request.header.id, bitmap=request.header.bitmap, qr=1, aa=1, ra=0)
    reply = DNSRecord(header, q=request.q if question else None)
    reply.header.rcode = rcode
    return bytes(reply.pack())


def _soa(reply: DNSRecord) -> None:
    reply.add_auth(RR(f"{ZONE}.", QTYPE.SOA, ttl=TTL,
                      rdata=SOA("ns.vm.", "hostmaster.vm.", (1, 60, 60, 60, TTL))))


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, lookup: Lookup | None = None, *, by_path: PathLookup | None = None) -> None:
        self.lookup = by_path or single(lookup or (lambda name: None))
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram transport here

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = answer_path(data, self.lookup)  # never raises: a lookup failure is SERVFAIL
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


async def serve(listen: str, lookup: Lookup | None = None, *,
                by_path: PathLookup | None = None) -> asyncio.DatagramTransport | None:
    """Start answering on HOST:PORT (UDP); a busy port is logged, not fatal for the daemon."""
    host, _, port = listen.rpartition(":")
    loop = asyncio.get_running_loop()
    try:
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(lookup, by_path=by_path), local_addr=(host, int(port)))
    except OSError as exc:
        log.warning("DNS for .vm not served: cannot listen on %s: %s", listen, exc.strerror)
        return None
    log.info("DNS for .vm on %s/udp", listen)
    return transport
