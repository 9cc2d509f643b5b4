"""The nftables pieces every egress gate shares, in either network mode: what a policy and its
resolved names put in the sets (`allowed`), the sets and the verdict chain that checks each of a
VM's packets against them as nft text, and reading back what it was refused. Nothing here runs
nft: firewall.py loads it in the VM's own namespace, tapfilter.py through the root helper."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated

import msgspec

from banger.egress_rules import HOST_ALIAS, Policy, usable_from_name
from banger.errors import OperationFailed

MAX_DENIED = 4096
DENIED_TIMEOUT = "60s"  # copied into the log every few seconds; expiry makes room for new ones
# One nft transaction carries about 13,000 set elements; what names resolve to stays below.
MAX_ELEMENTS = 8192


@dataclass(frozen=True)
class Names:
    """The nft object names of one gate (a VM's own namespace, or per VM in the tap table)."""

    pairs: str = "pairs"  # address . port
    every: str = "every"  # address, every TCP port
    hosts: str = "host_ports"  # host alias ports
    denied: str = "denied"
    networks: str = "networks"  # the IP/CIDR rules, as rules
    deny: str = "deny"
    check: str = "check"  # the verdict as its own chain (tap: jumped to from the base chains)

    @classmethod
    def for_vm(cls, vm_id: str) -> Names:
        p = f"eg{vm_id}"  # nft names are at most 255 chars; ids are 12 hex digits
        return cls(pairs=f"{p}p", every=f"{p}e", hosts=f"{p}h", denied=f"{p}d",
                   networks=f"{p}n", deny=f"{p}x", check=f"{p}c")


@dataclass(frozen=True)
class Allowed:
    """What the sets hold: typed, so the root helper can check each element."""

    pairs: tuple[tuple[str, int], ...] = ()
    every: tuple[str, ...] = ()
    networks: tuple[tuple[str, int | None], ...] = ()  # CIDR, port (None: every TCP port)
    host_ports: tuple[int, ...] = ()

    def size(self) -> int:
        return len(self.pairs) + len(self.every)


def allowed(policy: Policy, resolved: Mapping[str, Sequence[str]],
            blocked: Sequence[ipaddress.IPv4Network] = ()) -> Allowed:
    """The policy's networks and host ports, and what each allowed name resolved to (never a
    blocked address: the host's own, banger's networks); names no rule allows are dropped."""
    pairs: dict[tuple[str, int], None] = {}
    every: dict[str, None] = {}
    for name, addresses in sorted(resolved.items()):
        ports = policy.ports_for_name(name)
        if ports is None or name == HOST_ALIAS:
            continue
        for address in addresses:
            ip = ipaddress.IPv4Address(address)
            if not usable_from_name(ip) or any(ip in net for net in blocked):
                continue
            if None in ports:
                every[address] = None
            pairs.update(((address, port), None) for port in ports if port is not None)
    networks = tuple((rule.target, rule.port) for rule in policy.networks())
    return Allowed(tuple(pairs), tuple(every), networks, tuple(dict.fromkeys(policy.host_ports())))


def declarations(n: Names) -> list[str]:
    return [
        # A bound, not an allocation: above the cap, so the gate's cap (and log line) refuses first.
        f"set {n.pairs} {{ type ipv4_addr . inet_service; size {MAX_ELEMENTS * 2}; }}",
        f"set {n.every} {{ type ipv4_addr; size {MAX_ELEMENTS * 2}; }}",
        f"set {n.hosts} {{ type inet_service; }}",
        f"set {n.denied} {{ type ipv4_addr . inet_proto . inet_service; flags dynamic,timeout; "
        f"timeout {DENIED_TIMEOUT}; size {MAX_DENIED}; }}",
        f"chain {n.networks} {{ }}",
        f"chain {n.deny} {{ {'; '.join(deny_rules(n))}; }}",
    ]


def deny_rules(n: Names) -> list[str]:
    return [f"ip protocol tcp update @{n.denied} {{ ip daddr . ip protocol . tcp dport }} "
            "reject with tcp reset",
            f"ip protocol udp update @{n.denied} {{ ip daddr . ip protocol . udp dport }} reject",
            "reject with icmpx admin-prohibited"]


def verdict(n: Names, never: Sequence[str]) -> list[str]:
    """Every packet the VM sends in a connection's original direction goes through these, not
    only the first: a rule removed live also stops connections already open."""
    return [f"ip daddr {{ {', '.join(never)} }} goto {n.deny}",
            f"ip daddr . tcp dport @{n.pairs} accept",
            f"meta l4proto tcp ip daddr @{n.every} accept",
            f"jump {n.networks}",
            f"goto {n.deny}"]


def _body(items: Iterable[str]) -> str:
    return "{ " + ", ".join(items) + " }"


def fill(table: str, n: Names, allow: Allowed) -> str:
    """One transaction that makes the sets and the network rules say `allow`."""
    lines = [f"flush set {table} {n.pairs}", f"flush set {table} {n.every}",
             f"flush set {table} {n.hosts}", f"flush chain {table} {n.networks}"]
    lines += add(table, n, allow)
    lines += [f"add rule {table} {n.networks} ip daddr {cidr} "
              + (f"tcp dport {port} accept" if port is not None else "meta l4proto tcp accept")
              for cidr, port in allow.networks]
    return "\n".join(lines) + "\n"


def add(table: str, n: Names, allow: Allowed) -> list[str]:
    """Statements adding `allow`'s addresses and host ports (a grant: nothing flushed)."""
    lines = []
    if allow.pairs:
        lines.append(f"add element {table} {n.pairs} "
                     + _body(f"{address} . {port}" for address, port in allow.pairs))
    if allow.every:
        lines.append(f"add element {table} {n.every} {_body(allow.every)}")
    if allow.host_ports:
        lines.append(f"add element {table} {n.hosts} {_body(map(str, allow.host_ports))}")
    return lines


Concat = Annotated[list[str | int], msgspec.Meta(max_length=3)]


class _Value(msgspec.Struct):
    val: dict[str, Concat] = {}  # {"concat": [...]}


class _Element(msgspec.Struct):
    """An element as nft lists it: {"concat": [...]}, or timed {"elem": {"val": {...}}}."""

    concat: Concat | None = None
    elem: _Value | None = None

    def value(self) -> list[str | int]:
        if self.concat is not None:
            return self.concat
        return self.elem.val.get("concat", []) if self.elem else []


class _Set(msgspec.Struct):
    elem: Annotated[list[_Element], msgspec.Meta(max_length=MAX_DENIED)] = []


class _Item(msgspec.Struct):
    set: _Set | None = None


class _Listing(msgspec.Struct):
    nftables: Annotated[list[_Item], msgspec.Meta(max_length=16)] = []


def parse_denied(text: str) -> list[tuple[str, str, int]]:
    """(address, protocol, port) from `nft -j list set ... denied`."""
    try:
        listing = msgspec.json.decode(text.encode(), type=_Listing)
    except msgspec.DecodeError as exc:
        raise OperationFailed(f"nft listed the egress log in a form banger does not read: {exc}"
                              ) from None
    found = []
    for item in listing.nftables:
        for elem in item.set.elem if item.set else []:
            concat = elem.value()
            if len(concat) == 3:
                address, proto, port = concat
                if isinstance(port, int) and proto in ("tcp", "udp"):
                    found.append((str(address), str(proto), port))
    return found
