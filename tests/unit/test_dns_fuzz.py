"""The `.vm` DNS server under hostile packets: no exception escapes, and it answers only for
the running VMs it knows, only to queries, never with more than a small reply."""

from __future__ import annotations

import pytest
from dnslib import OPCODE, QTYPE, RCODE, DNSError, DNSHeader, DNSLabel, DNSQuestion, DNSRecord
from hypothesis import given
from hypothesis import strategies as st

from banger.dns.server import _Protocol, answer

KNOWN = {"web": "10.77.0.2", "db-1": "127.77.0.9"}
asked: list[str] = []


def lookup(name: str) -> str | None:
    asked.append(name)
    return KNOWN.get(name)


def check_reply(query: bytes, reply: bytes | None) -> DNSRecord | None:
    """The properties every reply has, whatever the query was."""
    if reply is None:
        return None
    assert len(reply) <= 512  # fits classic UDP; no amplification
    parsed = DNSRecord.parse(reply)
    assert parsed.header.qr == 1 and parsed.header.id == int.from_bytes(query[:2], "big")
    for rr in parsed.rr:
        name = str(rr.rname).rstrip(".").lower()
        assert rr.rtype == QTYPE.A and name.endswith(".vm"), rr
        assert str(rr.rdata) == KNOWN[name.removesuffix(".vm")], rr
    assert all(name in KNOWN or name.isascii() for name in asked)
    return parsed


@pytest.mark.fuzz
@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    check_reply(data, answer(data, lookup))


labels = st.sampled_from([b"web", b"WeB", b"db-1", b"vm", b"VM", b"nope", b"", b"a.b", b"\x00",
                          b"web\x00", b"x" * 63]) | st.binary(min_size=1, max_size=63)
names = (st.lists(labels, min_size=0, max_size=5)
         .filter(lambda ls: sum(len(label) + 1 for label in ls) < 255)  # dnslib packs no more
         .map(lambda ls: DNSLabel([*ls])))


@st.composite
def queries(draw: st.DrawFn) -> bytes:
    header = DNSHeader(id=draw(st.integers(0, 0xFFFF)), qr=draw(st.sampled_from([0, 0, 0, 1])),
                       opcode=draw(st.sampled_from([0, 0, 0, 1, 2, 4, 5, 15])),
                       rd=draw(st.integers(0, 1)))
    record = DNSRecord(header)
    for _ in range(draw(st.sampled_from([1, 1, 1, 0, 2, 3]))):
        qtype = draw(st.sampled_from([QTYPE.A, QTYPE.ANY, QTYPE.AAAA, QTYPE.MX]) |
                     st.integers(0, 0xFFFF))
        record.add_question(DNSQuestion(draw(names), qtype, draw(st.sampled_from([1, 1, 255]))))
    return bytes(record.pack())


@pytest.mark.fuzz
@given(queries())
def test_well_formed_ish_queries(query: bytes) -> None:
    parsed = check_reply(query, answer(query, lookup))
    try:
        request = DNSRecord.parse(query)
    except DNSError:  # dnslib packs labels it cannot parse back (not UTF-8): garbage to us too
        assert parsed is None
        return
    if request.header.qr == 1:
        assert parsed is None  # responses are never answered (no loops, no reflection)
        return
    if parsed is None:
        return
    if request.header.opcode != OPCODE.QUERY or len(request.questions) != 1:
        assert not parsed.rr and parsed.header.rcode in (RCODE.NOTIMP, RCODE.FORMERR)
        return
    labels_ = [bytes(label).lower() for label in request.q.qname.label]
    if labels_[-1:] != [b"vm"]:
        assert parsed.header.rcode == RCODE.REFUSED and not parsed.rr
    elif (len(labels_) == 2 and labels_[0].decode("ascii", "replace") in KNOWN
          and request.q.qtype in (QTYPE.A, QTYPE.ANY)):
        [rr] = parsed.rr
        assert str(rr.rdata) == KNOWN[labels_[0].decode()]
    else:
        assert not parsed.rr


def test_known_names_answer_and_others_do_not() -> None:
    def ask(name: str, qtype: str = "A") -> DNSRecord:
        query = bytes(DNSRecord.question(name, qtype).pack())
        reply = answer(query, lookup)
        assert reply is not None
        return DNSRecord.parse(reply)

    assert [str(rr.rdata) for rr in ask("WEB.vm").rr] == ["10.77.0.2"]
    assert ask("nope.vm").header.rcode == RCODE.NXDOMAIN
    assert ask("web.example").header.rcode == RCODE.REFUSED
    assert not ask("web.vm", "AAAA").rr and ask("web.vm", "AAAA").header.rcode == RCODE.NOERROR
    assert not ask("x.web.vm").rr


def test_a_name_longer_than_dns_allows_is_malformed() -> None:
    labels = b"".join(bytes([63]) + b"x" * 63 for _ in range(5)) + b"\x02vm\x00"
    query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + labels + b"\x00\x01\x00\x01"
    reply = answer(query, lookup)
    assert reply is None or DNSRecord.parse(reply).header.rcode == RCODE.FORMERR


def test_a_failing_lookup_is_not_an_exception_in_the_event_loop() -> None:
    def broken(name: str) -> str | None:
        raise RuntimeError("database is locked")

    sent: list[bytes] = []

    class Transport:
        def sendto(self, data: bytes, addr: object) -> None:
            sent.append(data)

    proto = _Protocol(broken)
    proto.transport = Transport()  # type: ignore[assignment]
    proto.datagram_received(bytes(DNSRecord.question("web.vm").pack()), ("127.0.0.1", 5353))
    [reply] = sent
    assert DNSRecord.parse(reply).header.rcode == RCODE.SERVFAIL
