"""Egress rules (`--allow RULE`): what a VM may connect to, parsed once, matched without I/O.

RULE is HOST[:PORT], IP[:PORT] or CIDR[:PORT]; HOST is a name, `*.NAME` (any name under it) or
`host.banger.internal` (the host's loopback, only on named ports). No port means every port.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from banger.errors import InvalidArgument, NotFound
from banger.numbers import shown

HOST_ALIAS = "host.banger.internal"
# The guest reaches the host alias at its user-mode gateway (QEMU maps it into the VM's namespace).
HOST_ALIAS_ADDRESS = "10.0.2.2"
MAX_RULES = 256
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_NAME = re.compile(rf"^{_LABEL}(\.{_LABEL})+$")
_PORT = re.compile(r"[0-9]{1,5}", re.ASCII)
# Names never open these, whatever DNS says (rebinding): only an IP/CIDR rule names them.
_NEVER_FROM_NAMES = tuple(ipaddress.IPv4Network(n) for n in (
    "0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/3"))
LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")


class Kind(StrEnum):
    NAME = "name"
    WILDCARD = "wildcard"
    NETWORK = "network"  # an IP is a /32
    HOST = "host"  # host.banger.internal


@dataclass(frozen=True)
class Rule:
    kind: Kind
    target: str  # the name (without "*."), or the network in CIDR form
    port: int | None  # None: every port

    def __str__(self) -> str:
        text = {Kind.WILDCARD: f"*.{self.target}",
                 Kind.NETWORK: self.target.removesuffix("/32")}.get(self.kind, self.target)
        return f"{text}:{self.port}" if self.port is not None else text

    def matches_name(self, name: str) -> bool:
        if self.kind is Kind.NAME:
            return name == self.target
        return self.kind is Kind.WILDCARD and name.endswith("." + self.target)



def _bad(rule: str, why: str) -> InvalidArgument:
    return InvalidArgument(f"invalid --allow rule {shown(rule)}: {why}")


def _split_port(text: str) -> tuple[str, int | None]:
    if text.count(":") > 1:
        raise _bad(text, "IPv6 is not supported: VMs with egress rules have no IPv6")
    host, sep, port = text.partition(":")
    if not sep:
        return host, None
    if not _PORT.fullmatch(port) or not 0 < int(port) < 65536:
        raise _bad(text, "the port must be 1-65535")
    return host, int(port)


def parse_rule(text: str) -> Rule:
    """One rule, normalised (lowercase names, networks in CIDR form), or one clear error."""
    raw = text.strip()
    if not raw or len(raw) > 300:
        raise _bad(text[:80], "use HOST[:PORT], IP[:PORT] or CIDR[:PORT]")
    host, port = _split_port(raw.lower())
    if host.rstrip(".") == HOST_ALIAS:
        if port is None:
            raise _bad(text, f"{HOST_ALIAS} needs a port: it reaches the host's loopback only on "
                             "the ports you name")
        return Rule(Kind.HOST, HOST_ALIAS, port)
    if "/" in host or is_ipv4(host):
        return Rule(Kind.NETWORK, _network(text, host), port)
    wildcard = host.startswith("*.")
    name = host.removeprefix("*.").rstrip(".")
    if not _NAME.match(name) or "*" in name or name.rsplit(".", 1)[-1].isdigit():
        raise _bad(text, "use a name like api.example.org or *.example.org, an IP or a CIDR")
    return Rule(Kind.WILDCARD if wildcard else Kind.NAME, name, port)


def is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _network(text: str, host: str) -> str:
    try:
        network = ipaddress.ip_network(host, strict=False)
    except ValueError:
        raise _bad(text, "not an IPv4 address or CIDR") from None
    if not isinstance(network, ipaddress.IPv4Network):
        raise _bad(text, "IPv6 is not supported: VMs with egress rules have no IPv6")
    if network.overlaps(LOOPBACK):
        raise _bad(text, f"the host's loopback is reached only as {HOST_ALIAS}:PORT")
    return str(network)


def parse_rules(texts: Iterable[str]) -> tuple[Rule, ...]:
    """Rules in order, each once."""
    rules = tuple(dict.fromkeys(parse_rule(t) for t in texts))
    if len(rules) > MAX_RULES:
        raise InvalidArgument(f"too many egress rules ({len(rules)}): at most {MAX_RULES}")
    return rules


def usable_from_name(address: ipaddress.IPv4Address) -> bool:
    """May an address a name resolved to be opened by a name rule?"""
    return not any(address in net for net in _NEVER_FROM_NAMES)


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...] = ()

    @classmethod
    def of(cls, texts: Sequence[str]) -> Policy:
        return cls(parse_rules(texts))

    def ports_for_name(self, name: str) -> tuple[int | None, ...] | None:
        """The ports a name may be reached on (None in it: every port); None: the name is denied."""
        name = name.lower().rstrip(".")
        if name == HOST_ALIAS:
            return self.host_ports() or None
        ports = tuple(dict.fromkeys(r.port for r in self.rules if r.matches_name(name)))
        return ports or None

    def host_ports(self) -> tuple[int, ...]:
        return tuple(r.port for r in self.rules if r.kind is Kind.HOST and r.port is not None)

    def networks(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.kind is Kind.NETWORK)

    def texts(self) -> list[str]:
        return [str(r) for r in self.rules]


def edit(current: Sequence[str], allow: Sequence[str], deny: Sequence[str]) -> list[str]:
    """`vm set --allow/--deny`: the rule list with these added and removed (denying a rule that
    is not there is an error, so a typo does not pass silently)."""
    rules = list(parse_rules(current))
    for text in deny:
        rule = parse_rule(text)
        if rule not in rules:
            listed = ", ".join(str(r) for r in rules) or "none"
            raise NotFound(f"no egress rule {str(rule)!r} to remove (rules: {listed})")
        rules.remove(rule)
    rules += [r for r in parse_rules(allow) if r not in rules]
    if len(rules) > MAX_RULES:
        raise InvalidArgument(f"too many egress rules ({len(rules)}): at most {MAX_RULES}")
    return [str(r) for r in rules]


def parse_upstream(text: str) -> tuple[str, int]:
    """`egress_upstream_dns`: an IPv4 ADDRESS[:PORT] (port 53 when none)."""
    address, sep, port = text.partition(":")
    if not is_ipv4(address) or (sep and not (_PORT.fullmatch(port) and 0 < int(port) < 65536)):
        raise InvalidArgument(f"{shown(text)} is not an IPv4 ADDRESS[:PORT] such as 127.0.0.53")
    return address, int(port) if sep else 53
