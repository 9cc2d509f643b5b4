"""The egress nftables table (issue 20): its text loads in a real nft, names only ever open the
addresses they resolved to (never loopback/link-local/multicast), and the refusal log parses."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from banger.egress_rules import Policy
from banger.errors import OperationFailed
from banger.net.egress import firewall
from banger.net.egress.nftset import allowed
from banger.runner import Result, run, which

POLICY = Policy.of(["a.org:443", "a.org:80", "b.org", "*.c.org:22", "10.0.0.0/8:22", "1.2.3.4",
                    "host.banger.internal:8080", "host.banger.internal:9090"])
RESOLVED = {"a.org": ["93.1.1.1", "127.0.0.1", "93.1.1.2"],
            "b.org": ["94.1.1.1", "169.254.169.254", "224.0.0.251", "0.0.0.0", "240.1.1.1"],
            "x.c.org": ["95.1.1.1"], "gone.org": ["96.1.1.1"],
            "host.banger.internal": ["10.0.2.2", "97.1.1.1"]}
NS = ["unshare", "--user", "--map-root-user", "--net"]


def name_elements(policy: Policy, resolved: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    found = allowed(policy, resolved)
    return [f"{address} . {port}" for address, port in found.pairs], list(found.every)


def ruleset(policy: Policy, resolved: dict[str, list[str]]) -> str:
    return firewall.ruleset(allowed(policy, resolved))


def update(policy: Policy, resolved: dict[str, list[str]]) -> str:
    return firewall.update(allowed(policy, resolved))


def _can_unshare() -> bool:
    if which("nft") is None or which("unshare") is None:
        return False
    return run([*NS, "true"], check=False, timeout=10).ok


needs_nft = pytest.mark.skipif(not _can_unshare(), reason="needs nft and user namespaces")


def test_names_open_only_their_usable_addresses_on_their_ports() -> None:
    pairs, every = name_elements(POLICY, RESOLVED)
    assert pairs == ["93.1.1.1 . 443", "93.1.1.1 . 80", "93.1.1.2 . 443", "93.1.1.2 . 80",
                     "95.1.1.1 . 22"]
    assert every == ["94.1.1.1"]  # b.org has a port-less rule
    text = " ".join(pairs + every)
    for never in ("127.0.0.1", "169.254.169.254", "224.0.0.251", "0.0.0.0", "240.1.1.1"):
        assert never not in text
    assert "96.1.1.1" not in text  # gone.org: no rule allows it any more
    assert "97.1.1.1" not in text and "10.0.2.2" not in text  # the host alias is no name


def test_a_name_no_longer_allowed_drops_its_addresses() -> None:
    narrower = Policy.of(["b.org:443"])
    pairs, every = name_elements(narrower, RESOLVED)
    assert (pairs, every) == (["94.1.1.1 . 443"], [])
    assert name_elements(Policy(), RESOLVED) == ([], [])
    script = update(narrower, RESOLVED)
    assert "93.1.1.1" not in script and "every {" not in script.split("flush chain")[1]


def test_a_name_with_port_and_portless_rules_is_in_every_and_pairs() -> None:
    pairs, every = name_elements(Policy.of(["a.org", "a.org:443"]), {"a.org": ["93.1.1.1"]})
    assert (pairs, every) == (["93.1.1.1 . 443"], ["93.1.1.1"])


def test_duplicates_across_names_appear_once() -> None:
    pairs, every = name_elements(Policy.of(["a.org:443", "b.org:443", "c.org"]),
                                 {"a.org": ["9.9.9.9"], "b.org": ["9.9.9.9"],
                                  "c.org": ["8.8.8.8", "8.8.8.8"]})
    assert (pairs, every) == (["9.9.9.9 . 443"], ["8.8.8.8"])


def test_host_alias_ports_go_to_host_ports_only() -> None:
    script = update(Policy.of(["host.banger.internal:8080", "host.banger.internal:9090"]),
                    {"host.banger.internal": ["10.0.2.2"]})
    assert "add element inet banger_egress host_ports { 8080, 9090 }" in script
    assert "pairs {" not in script and "every {" not in script and "add rule" not in script


def test_network_rules() -> None:
    lines = update(POLICY, {}).splitlines()
    assert [line for line in lines if line.startswith("add rule")] == [
        "add rule inet banger_egress networks ip daddr 10.0.0.0/8 tcp dport 22 accept",
        "add rule inet banger_egress networks ip daddr 1.2.3.4/32 meta l4proto tcp accept"]


def test_names_never_open_blocked_addresses() -> None:
    """The host's own addresses and banger's networks come only from an IP/CIDR rule."""
    blocked = [ipaddress.IPv4Network("192.0.2.2/32"), ipaddress.IPv4Network("10.77.0.0/24")]
    found = allowed(Policy.of(["a.org", "b.org:443"]),
                    {"a.org": ["192.0.2.2", "93.1.1.1"], "b.org": ["10.77.0.5"]}, blocked)
    assert (found.pairs, found.every) == ((), ("93.1.1.1",))


def test_update_flushes_everything_first_and_never_adds_empty_sets() -> None:
    lines = update(Policy(), {}).splitlines()
    assert lines == ["flush set inet banger_egress pairs", "flush set inet banger_egress every",
                     "flush set inet banger_egress host_ports",
                     "flush chain inet banger_egress networks"]


def _nft_check(tmp_path: Path, script: str) -> Result:
    path = tmp_path / "rules.nft"
    path.write_text(script)
    return run([*NS, "nft", "-c", "-f", str(path)], check=False, timeout=30)


@needs_nft
@pytest.mark.parametrize(("policy", "resolved"), [
    (POLICY, RESOLVED), (Policy(), {}), (Policy.of(["a.org"]), {"a.org": ["93.1.1.1"]}),
    (Policy.of(["host.banger.internal:1", "0.0.0.1:65535"]), {}),
])
def test_ruleset_loads_in_a_real_nft(tmp_path: Path, policy: Policy,
                                     resolved: dict[str, list[str]]) -> None:
    res = _nft_check(tmp_path, ruleset(policy, resolved))
    assert res.ok, res.stderr


@needs_nft
def test_nft_check_would_catch_a_broken_ruleset(tmp_path: Path) -> None:
    broken = ruleset(POLICY, RESOLVED).replace("type ipv4_addr;", "type ipv4_adr;")
    assert not _nft_check(tmp_path, broken).ok


def _in_namespace(tmp_path: Path, *scripts: str) -> str:
    """Load these scripts in a throwaway user+net namespace and list the whole ruleset as JSON."""
    paths = []
    for i, script in enumerate(scripts):
        paths.append(tmp_path / f"{i}.nft")
        paths[-1].write_text(script)
    loads = " && ".join(f"nft -f {p}" for p in paths)
    res = run([*NS, "sh", "-c", f"{loads} && nft -j list ruleset"], timeout=30)
    return res.stdout


@needs_nft
def test_update_applies_on_top_of_the_loaded_table(tmp_path: Path) -> None:
    narrower = Policy.of(["b.org:443", "host.banger.internal:8080"])
    listing = json.loads(_in_namespace(tmp_path, ruleset(POLICY, RESOLVED),
                                       update(narrower, RESOLVED)))
    sets = {i["set"]["name"]: i["set"].get("elem", []) for i in listing["nftables"] if "set" in i}
    assert sets["every"] == [] and sets["host_ports"] == [8080]
    assert sets["pairs"] == [{"concat": ["94.1.1.1", 443]}]
    rules = [i["rule"] for i in listing["nftables"] if "rule" in i]
    assert not [r for r in rules if r["chain"] == "networks"]


def _denied_with(monkeypatch: pytest.MonkeyPatch, stdout: str) -> list[tuple[str, str, int]]:
    seen: list[Sequence[Any]] = []

    async def fake_arun(argv: Sequence[Any], **_: Any) -> Result:
        seen.append(argv)
        return Result(list(argv), 0, stdout, "")

    monkeypatch.setattr(firewall, "arun", fake_arun)
    found = asyncio.run(firewall.denied(4242))
    assert seen and seen[0][:3] == ["nsenter", "--target", "4242"]
    assert list(seen[0][-6:]) == ["-j", "list", "set", "inet", "banger_egress", "denied"]
    return found


@needs_nft
def test_denied_reads_what_a_real_nft_lists(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "list.sh"
    path.write_text(f"nft -f {tmp_path}/0.nft\n"
                    'nft add element inet banger_egress denied "{ 1.2.3.4 . tcp . 80 }"\n'
                    'nft add element inet banger_egress denied "{ 5.6.7.8 . udp . 53 }"\n'
                    "nft -j list set inet banger_egress denied\n")
    (tmp_path / "0.nft").write_text(ruleset(POLICY, RESOLVED))
    stdout = run([*NS, "sh", str(path)], timeout=30).stdout
    assert sorted(_denied_with(monkeypatch, stdout)) == [("1.2.3.4", "tcp", 80),
                                                         ("5.6.7.8", "udp", 53)]


def test_denied_empty_and_odd_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _denied_with(monkeypatch, '{"nftables": []}') == []
    assert _denied_with(monkeypatch, '{"nftables": [{"metainfo": {"version": "1"}},'
                                     ' {"set": {"name": "denied"}}]}') == []
    odd = {"nftables": [{"set": {"elem": [{"concat": ["1.1.1.1", "tcp"]},
                                          {"concat": ["2.2.2.2", "tcp", 443]}]}}]}
    assert _denied_with(monkeypatch, json.dumps(odd)) == [("2.2.2.2", "tcp", 443)]


@pytest.mark.parametrize("stdout", [
    "", "not json", "[]", '{"nftables": {}}', '{"nftables": [{"set": {"elem": [{"concat": '
    '["1.1.1.1", "tcp", 1, 2]}]}}]}', '{"nftables": [{"set": {"elem": [{"concat": [null]}]}}]}',
    json.dumps({"nftables": [{"set": {"elem": [{"concat": ["1.1.1.1", "tcp", 1]}] * 4097}}]}),
    json.dumps({"nftables": [{}] * 17}),
])
def test_denied_garbage_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, stdout: str) -> None:
    with pytest.raises(OperationFailed, match="in a form banger does not read") as info:
        _denied_with(monkeypatch, stdout)
    assert "\n" not in info.value.message


def test_denied_odd_elements_are_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    odd = {"nftables": [{"set": {"elem": [{"concat": ["1.1.1.1", "tcp", "http"]},
                                          {"concat": ["1.1.1.1", "icmp", 3]},
                                          {"concat": ["1.1.1.2", "tcp", 443]}]}}]}
    assert _denied_with(monkeypatch, json.dumps(odd)) == [("1.1.1.2", "tcp", 443)]


_LIVE = """
import socket, subprocess, sys, threading
server = socket.socket()
server.bind(("198.51.100.1", 8080))
server.listen()
def echo():
    conn, _ = server.accept()
    while data := conn.recv(100):
        conn.sendall(data)
threading.Thread(target=echo, daemon=True).start()
def attempt(port):
    try:
        socket.create_connection(("198.51.100.1", port), timeout=3)
        return "open"
    except OSError as e:
        return type(e).__name__
conn = socket.create_connection(("198.51.100.1", 8080), timeout=3)
conn.sendall(b"a")
print("before", conn.recv(10).decode(), attempt(8081))
subprocess.run(["nft", "-f", sys.argv[1]], check=True)
try:
    conn.sendall(b"b")
    print("after", conn.recv(10).decode() or "closed")
except OSError as e:
    print("after", type(e).__name__)
print("new", attempt(8080))
"""


@needs_nft
def test_a_rule_removed_live_also_ends_open_connections(tmp_path: Path) -> None:
    """Packets of connections already open are checked too; refusals are resets, not timeouts."""
    (tmp_path / "0.nft").write_text(ruleset(Policy.of(["198.51.100.1:8080"]), {}))
    (tmp_path / "1.nft").write_text(update(Policy(), {}))
    (tmp_path / "live.py").write_text(_LIVE)
    script = ("ip link set lo up && ip addr add 198.51.100.1/32 dev lo && "
              f"nft -f {tmp_path}/0.nft && python3 {tmp_path}/live.py {tmp_path}/1.nft")
    out = run([*NS, "sh", "-c", script], timeout=60).stdout.split("\n")
    assert out[:3] == ["before a ConnectionRefusedError", "after ConnectionResetError",
                       "new ConnectionRefusedError"]
