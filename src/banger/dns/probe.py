"""Does something answer `.vm` at HOST:PORT? One SOA query for the zone apex, short timeout."""

from __future__ import annotations

import socket

from dnslib import QTYPE, RCODE, DNSRecord


def answers(listen: str, timeout: float = 0.5) -> bool:
    host, _, port = listen.rpartition(":")
    query = DNSRecord.question("vm.", "SOA")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(bytes(query.pack()), (host, int(port)))
            data = s.recv(512)
        reply = DNSRecord.parse(data)
    except Exception:  # refused, timed out, garbage: not banger's DNS
        return False
    return (reply.header.id == query.header.id and reply.header.rcode == RCODE.NOERROR
            and any(rr.rtype == QTYPE.SOA for rr in reply.auth))
