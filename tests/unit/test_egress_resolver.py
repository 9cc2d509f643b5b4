"""The egress VM's DNS and gate bookkeeping (issue 20): what a hostile guest's queries get, what
reaches the upstream, what the firewall is told, and the on-disk state read back with bounds."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

import msgspec
import pytest
from dnslib import CNAME, OPCODE, QTYPE, RCODE, RR, A, DNSQuestion, DNSRecord

from banger.egress_rules import Policy
from banger.errors import BangerError
from banger.net.egress import gate, resolver
from banger.net.egress.firewall import grant, update
from banger.net.egress.gate import Denial, Gate, load_resolved, log_file, read_log, resolved_file
from banger.net.egress.nftset import MAX_ELEMENTS, Allowed
from banger.net.egress.resolver import Resolver, upstream_server

SERVER = ("192.0.2.53", 5353)


class Fake:
    """The upstream, grant and deny, recording in one list so their order shows."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, upstream: DNSRecord | Exception | None
                 = None) -> None:
        self.events: list[tuple[str, ...]] = []

        async def forward(name: str, server: tuple[str, int]) -> DNSRecord:
            self.events.append(("forward", name, f"{server[0]}:{server[1]}"))
            if isinstance(upstream, Exception):
                raise upstream
            assert upstream is not None, "the upstream must not be asked"
            return upstream

        monkeypatch.setattr(resolver, "_forward", forward)

    async def grant(self, name: str, addresses: list[str]) -> None:
        self.events.append(("grant", name, *addresses))

    def deny(self, name: str) -> None:
        self.events.append(("deny", name))

    def ask(self, rules: list[str], query: bytes) -> DNSRecord | None:
        res = Resolver(lambda: Policy.of(rules), SERVER, self.grant, self.deny)
        reply = asyncio.run(res.answer(query))
        self.events.append(("answered",))
        return None if reply is None else DNSRecord.parse(reply)


def upstream_reply(name: str, *records: RR, rcode: int = RCODE.NOERROR) -> DNSRecord:
    reply = DNSRecord.question(name, "A").reply()
    reply.header.rcode = rcode
    reply.add_answer(*records)
    return reply


def a(name: str, address: str, ttl: int = 60) -> RR:
    return RR(name, QTYPE.A, rdata=A(address), ttl=ttl)


def query(name: str, qtype: str = "A") -> bytes:
    return bytes(DNSRecord.question(name, qtype).pack())


def test_denied_name_is_nxdomain_logged_and_never_forwarded(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    fake = Fake(monkeypatch)
    for qtype in ("A", "AAAA", "TXT"):
        reply = fake.ask(["idx.test"], query("Evil.Example.", qtype))
        assert reply is not None and reply.header.rcode == RCODE.NXDOMAIN and not reply.rr
    assert fake.events == [("deny", "evil.example"), ("answered",)] * 3


def test_allowed_a_is_granted_before_the_reply_and_filtered(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    records = [RR("idx.test", QTYPE.CNAME, rdata=CNAME("cdn.example"), ttl=9999),
               a("cdn.example", "192.0.2.10", ttl=86400), a("cdn.example", "127.0.0.1"),
               a("cdn.example", "169.254.169.254"), a("cdn.example", "192.0.2.11"),
               a("cdn.example", "192.0.2.10"),
               RR("cdn.example", QTYPE.TXT, rdata=A("1.1.1.1"))]
    fake = Fake(monkeypatch, upstream_reply("idx.test", *records))
    reply = fake.ask(["Idx.Test:443"], query("IDX.TEST."))
    assert fake.events == [("forward", "idx.test", "192.0.2.53:5353"),
                           ("grant", "idx.test", "192.0.2.10", "192.0.2.11"),
                           ("answered",)]
    assert reply is not None and reply.header.rcode == RCODE.NOERROR
    shown = [(QTYPE[rr.rtype], str(rr.rdata), rr.ttl) for rr in reply.rr]
    assert shown == [("CNAME", "cdn.example.", 300), ("A", "192.0.2.10", 300),
                     ("A", "192.0.2.11", 60), ("A", "192.0.2.10", 60)]


def test_the_reply_waits_for_the_firewall(monkeypatch: pytest.MonkeyPatch) -> None:
    Fake(monkeypatch, upstream_reply("a.org", a("a.org", "93.1.1.1")))

    async def scenario() -> None:
        granted, release = asyncio.Event(), asyncio.Event()

        async def grant(name: str, addresses: list[str]) -> None:
            granted.set()
            await release.wait()

        res = Resolver(lambda: Policy.of(["a.org"]), SERVER, grant, lambda name: None)
        task = asyncio.create_task(res.answer(query("a.org")))
        await asyncio.wait_for(granted.wait(), 5)
        assert not task.done()
        release.set()
        assert DNSRecord.parse(await asyncio.wait_for(task, 5)).a.rdata == A("93.1.1.1")

    asyncio.run(scenario())


def test_at_most_max_addresses_are_granted(monkeypatch: pytest.MonkeyPatch) -> None:
    many = [a("a.org", f"93.1.1.{i}") for i in range(1, 41)]
    fake = Fake(monkeypatch, upstream_reply("a.org", *many))
    reply = fake.ask(["a.org"], query("a.org"))
    assert len(fake.events[1]) == 2 + resolver.MAX_ADDRESSES  # ("grant", name, *addresses)
    assert reply is not None and len(reply.rr) == resolver.MAX_ADDRESSES


@pytest.mark.parametrize("qtype", ["AAAA", "TXT", "MX", "ANY", "HTTPS"])
def test_other_types_for_allowed_names_are_empty_without_upstream(
        monkeypatch: pytest.MonkeyPatch, qtype: str) -> None:
    fake = Fake(monkeypatch)
    reply = fake.ask(["*.idx.test"], query("files.idx.test", qtype))
    assert reply is not None and reply.header.rcode == RCODE.NOERROR and not reply.rr
    assert fake.events == [("answered",)]


def test_host_alias_only_with_a_host_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = Fake(monkeypatch)
    reply = fake.ask(["host.banger.internal:8080"], query("host.banger.internal"))
    assert reply is not None and [str(rr.rdata) for rr in reply.rr] == ["10.0.2.2"]
    reply = fake.ask(["idx.test"], query("host.banger.internal"))
    assert reply is not None and reply.header.rcode == RCODE.NXDOMAIN
    # neither forwarded nor granted; denied and logged without a host rule
    assert fake.events == [("answered",), ("deny", "host.banger.internal"), ("answered",)]


def _two_questions() -> bytes:
    return bytes(DNSRecord(questions=[DNSQuestion("a.org"), DNSQuestion("a.org")]).pack())


@pytest.mark.parametrize("data", [
    b"", b"\x00", b"garbage" * 10, b"\xff" * 600, query("a.org")[:15],
    bytes(upstream_reply("a.org", a("a.org", "93.1.1.1")).pack()), _two_questions(),
    bytes(DNSRecord().pack()),
])
def test_garbage_responses_and_odd_questions_get_no_reply(monkeypatch: pytest.MonkeyPatch,
                                                          data: bytes) -> None:
    fake = Fake(monkeypatch)
    assert fake.ask(["a.org"], data) is None
    record = DNSRecord.question("a.org")
    record.header.opcode = OPCODE.UPDATE
    reply = fake.ask(["a.org"], bytes(record.pack()))
    assert reply is not None and reply.header.rcode == RCODE.NOTIMP
    assert fake.events == [("answered",)] * 2


@pytest.mark.parametrize("rcode", [RCODE.NXDOMAIN, RCODE.SERVFAIL, RCODE.REFUSED])
def test_upstream_error_rcode_is_passed_through(monkeypatch: pytest.MonkeyPatch,
                                                rcode: int) -> None:
    fake = Fake(monkeypatch, upstream_reply("a.org", a("a.org", "93.1.1.1"), rcode=rcode))
    reply = fake.ask(["a.org"], query("a.org"))
    assert reply is not None and reply.header.rcode == rcode and not reply.rr
    assert [e[0] for e in fake.events] == ["forward", "answered"]  # nothing granted


@pytest.mark.parametrize("error", [TimeoutError("timed out"), OSError("unreachable"),
                                   ValueError("bad packet")])
def test_upstream_failure_is_servfail(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    request = DNSRecord.question("a.org")
    reply = Fake(monkeypatch, error).ask(["a.org"], bytes(request.pack()))
    assert reply is not None and reply.header.rcode == RCODE.SERVFAIL and not reply.rr
    assert reply.header.id == request.header.id


def test_upstream_server(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    assert upstream_server("10.0.0.1:5353", conf) == ("10.0.0.1", 5353)
    assert upstream_server("10.0.0.1", conf) == ("10.0.0.1", 53)
    assert upstream_server("", conf) == ("127.0.0.1", 53)  # no resolv.conf
    conf.write_text("# nameserver 9.9.9.9\nsearch lan\nnameserver\nnameserver 127.0.0.53\n"
                    "nameserver 1.1.1.1\n")
    assert upstream_server("", conf) == ("127.0.0.53", 53)


def test_upstream_server_skips_ipv6_nameservers(tmp_path: Path) -> None:
    (tmp_path / "resolv.conf").write_text("nameserver fd00::1\nnameserver 192.168.1.1\n")
    assert upstream_server("", tmp_path / "resolv.conf") == ("192.168.1.1", 53)


def test_load_resolved_tolerates_garbage_and_is_bounded(tmp_path: Path) -> None:
    assert load_resolved(tmp_path) == {}
    for garbage in (b"", b"garbage", b"[]", b'{"a.org": "1.1.1.1"}', b'{"a.org": [1]}', b"\xff"):
        resolved_file(tmp_path).write_bytes(garbage)
        assert load_resolved(tmp_path) == {}
    data = {f"n{i}.org": [f"1.1.{j}.1" for j in range(40)] for i in range(gate.MAX_NAMES + 5)}
    resolved_file(tmp_path).write_bytes(msgspec.json.encode(data))
    loaded = load_resolved(tmp_path)
    assert len(loaded) == gate.MAX_NAMES
    assert {len(v) for v in loaded.values()} == {resolver.MAX_ADDRESSES}


def test_read_log_skips_garbage_and_is_bounded(tmp_path: Path) -> None:
    assert read_log(tmp_path) == []
    good = msgspec.json.encode(Denial("2026-01-01T00:00:00Z", "dns", "evil.example"))
    lines = [b"garbage", good, b'{"time": 1}', b"\xff", b"", good[:-3]]
    log_file(tmp_path).write_bytes(b"\n".join(lines + [good] * (gate.MAX_LOG_ENTRIES + 10)))
    found = read_log(tmp_path)  # 6 lines of garbage, then good ones up to the bound
    assert len(found) == gate.MAX_LOG_ENTRIES - 5 and set(found) == {Denial(
        "2026-01-01T00:00:00Z", "dns", "evil.example")}


class FakeWall:
    def __init__(self) -> None:
        self.scripts: list[str] = []

    async def fill(self, allow: Allowed) -> None:
        self.scripts.append("fill " + update(allow))

    async def grant(self, allow: Allowed) -> None:
        self.scripts.append(grant(allow))

    async def denied(self) -> list[tuple[str, str, int]]:
        return []


def make_gate(tmp_path: Path, rules: list[str], wall: FakeWall | None = None) -> Gate:
    return Gate(tmp_path, wall or FakeWall(), Policy.of(rules), ("127.0.0.1", 53))


def test_record_dedupes_across_restarts(tmp_path: Path) -> None:
    g = make_gate(tmp_path, ["a.org"])
    for kind, target in [("dns", "evil.example"), ("dns", "evil.example"), ("tcp", "1.2.3.4:80"),
                         ("udp", "1.2.3.4:80")]:
        g._record(kind, target)
    again = make_gate(tmp_path, ["a.org"])  # a restarted daemon reads the log back
    again._record("dns", "evil.example")
    again._record("dns", 'q"\n\x1b[2J.example')
    found = [(d.kind, d.target) for d in read_log(tmp_path)]
    assert found == [("dns", "evil.example"), ("tcp", "1.2.3.4:80"), ("udp", "1.2.3.4:80"),
                     ("dns", 'q"\n\x1b[2J.example')]
    assert len(log_file(tmp_path).read_bytes().splitlines()) == 4  # one JSON line each


def test_gate_grants_through_the_firewall(tmp_path: Path) -> None:
    wall = FakeWall()
    g = make_gate(tmp_path, ["a.org:443"], wall)
    asyncio.run(g._grant("a.org", ["93.1.1.1"]))
    asyncio.run(g._grant("a.org", ["93.1.1.1"]))  # nothing new: the firewall is not touched
    asyncio.run(g._grant("a.org", ["93.1.1.2"]))
    assert len(wall.scripts) == 2 and "{ 93.1.1.2 . 443, 93.1.1.1 . 443 }" in wall.scripts[1]
    assert not wall.scripts[1].startswith("fill")  # a grant adds; it never flushes
    assert load_resolved(tmp_path) == {"a.org": ["93.1.1.2", "93.1.1.1"]}
    g.resolved = {f"n{i}.org": ["9.9.9.9"] for i in range(gate.MAX_NAMES)}
    with pytest.raises(BangerError, match="too many names"):
        asyncio.run(g._grant("a.org", ["93.1.1.3"]))


def test_gate_caps_what_names_open(tmp_path: Path) -> None:
    """A wildcard over a zone with many addresses cannot grow the sets past one transaction."""
    wall = FakeWall()
    g = make_gate(tmp_path, ["*.w.org:443", "*.w.org:80"], wall)
    for i in range(MAX_ELEMENTS // 64):
        asyncio.run(g._grant(f"n{i}.w.org", [f"10.{i // 256}.{i % 256}.{j}" for j in range(32)]))
    with pytest.raises(BangerError, match="more than"):
        asyncio.run(g._grant("last.w.org", ["11.0.0.1"]))
    assert "last.w.org" not in load_resolved(tmp_path)  # nothing saved that the filter lacks
    assert ("dns", "last.w.org") in {(d.kind, d.target) for d in read_log(tmp_path)}


def test_upstream_answers_only_count_from_the_upstream_with_our_id_and_question() -> None:
    """A forged datagram (another sender, a wrong id, another question) never becomes an answer
    whose addresses the firewall would open."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    forger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    forger.bind(("127.0.0.1", 0))

    def upstream() -> None:
        data, client = server.recvfrom(4096)
        query = DNSRecord.parse(data)
        forged = query.reply()
        forged.add_answer(a(str(query.q.qname), "203.0.113.66"))
        forger.sendto(forged.pack(), client)  # another sender: dropped by the connected socket
        wrong_id = query.reply()
        wrong_id.header.id = (query.header.id + 1) % 65536
        wrong_id.add_answer(a(str(query.q.qname), "203.0.113.67"))
        server.sendto(wrong_id.pack(), client)
        other = DNSRecord.question("other.example.org", "A").reply()
        other.header.id = query.header.id
        other.add_answer(a("other.example.org", "203.0.113.68"))
        server.sendto(other.pack(), client)
        real = query.reply()
        real.add_answer(a(str(query.q.qname), "192.0.2.10"))
        server.sendto(real.pack(), client)

    thread = threading.Thread(target=upstream)
    thread.start()
    try:
        reply = asyncio.run(resolver._forward("idx.test", server.getsockname()))
    finally:
        thread.join(5)
        server.close()
        forger.close()
    assert [str(rr.rdata) for rr in reply.rr] == ["192.0.2.10"]
