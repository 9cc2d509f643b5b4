"""The packet filter inside an egress VM's own network namespace (nftables, no root needed:
the daemon's user owns that namespace).

QEMU's user-mode stack opens a host socket for each guest connection, in that namespace, so the
output hook sees every one: allowed address.port pairs go out (through slirp4netns), the host
alias (127.0.0.1 there) is redirected to the daemon's proxy, the guest's DNS reaches the daemon's
resolver, and everything else is refused at once (TCP reset, ICMP unreachable) and remembered in
a set the daemon reads for `vm logs --egress`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated

import msgspec

from banger.errors import OperationFailed, Unavailable
from banger.net.egress.rules import HOST_ALIAS, Policy, usable_from_name
from banger.runner import arun, which

TABLE = "banger_egress"
# In the VM's private namespace: where redirected host-alias connections and DNS land.
PROXY_PORT = 61000
DNS_PORT = 53
MAX_DENIED = 4096
# slirp4netns's side of the namespace (its resolver at .3 would skip banger's): never a target.
SLIRP_NET = "10.0.2.0/24"


def nft_binary() -> str:
    path = which("nft")
    if path is None:
        raise Unavailable("--allow needs nftables to enforce the rules: apt-get install nftables")
    return path


def nsenter_argv(pid: int, *argv: str) -> list[str]:
    """argv in the user and network namespace of pid (a QEMU the daemon's user started)."""
    return ["nsenter", "--target", str(pid), "--user", "--net", "--preserve-credentials",
            "--", *argv]


def name_elements(policy: Policy, resolved: Mapping[str, Sequence[str]]
                  ) -> tuple[list[str], list[str]]:
    """What each allowed name resolved to: (address . port pairs, addresses open on every port).
    Names no rule allows any more contribute nothing."""
    pairs: dict[str, None] = {}
    every: dict[str, None] = {}
    for name, addresses in sorted(resolved.items()):
        ports = policy.ports_for_name(name)
        if ports is None or name == HOST_ALIAS:
            continue
        for address in addresses:
            if not usable_from_name(ipaddress.IPv4Address(address)):
                continue
            if None in ports:
                every[address] = None
            pairs.update((f"{address} . {port}", None) for port in ports if port is not None)
    return list(pairs), list(every)


def network_rules(policy: Policy) -> list[str]:
    return [f"ip daddr {rule.target} tcp dport {rule.port} accept" if rule.port is not None
            else f"ip daddr {rule.target} meta l4proto tcp accept" for rule in policy.networks()]


def _set_body(elements: Iterable[str]) -> str:
    return f"{{ {', '.join(elements)} }}"


def ruleset(policy: Policy, resolved: Mapping[str, Sequence[str]]) -> str:
    """The whole table, loaded before QEMU starts (the namespace is never open)."""
    return f"""table inet {TABLE} {{
    set pairs {{ type ipv4_addr . inet_service; size 65536; }}
    set every {{ type ipv4_addr; size 65536; }}
    set host_ports {{ type inet_service; }}
    set denied {{ type ipv4_addr . inet_proto . inet_service; flags dynamic; size {MAX_DENIED}; }}
    chain networks {{
    }}
    chain nat_out {{
        type nat hook output priority -100; policy accept;
        ip daddr 127.0.0.1 tcp dport @host_ports redirect to :{PROXY_PORT}
    }}
    chain out {{
        type filter hook output priority 0; policy drop;
        ct state established,related accept
        ct status dnat accept
        oif lo ip daddr 127.0.0.1 udp dport {DNS_PORT} accept
        ip daddr {{ 127.0.0.0/8, {SLIRP_NET} }} goto deny
        ip daddr . tcp dport @pairs accept
        meta l4proto tcp ip daddr @every accept
        jump networks
        goto deny
    }}
    chain deny {{
        ip protocol tcp update @denied {{ ip daddr . ip protocol . tcp dport }} reject with tcp reset
        ip protocol udp update @denied {{ ip daddr . ip protocol . udp dport }} reject
        reject with icmpx admin-prohibited
    }}
}}
{update(policy, resolved)}"""


def update(policy: Policy, resolved: Mapping[str, Sequence[str]]) -> str:
    """One transaction that makes the sets and the network rules say what the policy says now."""
    table = f"inet {TABLE}"
    lines = [f"flush set {table} pairs", f"flush set {table} every",
             f"flush set {table} host_ports", f"flush chain {table} networks"]
    pairs, every = name_elements(policy, resolved)
    hosts = [str(port) for port in dict.fromkeys(policy.host_ports())]
    for name, elements in (("pairs", pairs), ("every", every), ("host_ports", hosts)):
        if elements:
            lines.append(f"add element {table} {name} {_set_body(elements)}")
    lines += [f"add rule {table} networks {rule}" for rule in network_rules(policy)]
    return "\n".join(lines) + "\n"


async def apply(pid: int, script: str) -> None:
    await arun(nsenter_argv(pid, nft_binary(), "-f", "-"), input=script.encode(), timeout=10,
               what="nft (egress rules)")


class _Concat(msgspec.Struct):
    concat: Annotated[list[str | int], msgspec.Meta(max_length=3)]


class _Set(msgspec.Struct):
    elem: Annotated[list[_Concat], msgspec.Meta(max_length=MAX_DENIED)] = []


class _Item(msgspec.Struct):
    set: _Set | None = None


class _Listing(msgspec.Struct):
    nftables: Annotated[list[_Item], msgspec.Meta(max_length=16)] = []


async def denied(pid: int) -> list[tuple[str, str, int]]:
    """(address, protocol, port) of every connection the namespace refused so far."""
    res = await arun(nsenter_argv(pid, nft_binary(), "-j", "list", "set", "inet", TABLE,
                                  "denied"), timeout=10, what="nft (egress log)")
    try:
        listing = msgspec.json.decode(res.stdout.encode(), type=_Listing)
    except msgspec.DecodeError as exc:
        raise OperationFailed(f"nft listed the egress log in a form banger does not read: {exc}"
                              ) from None
    found = []
    for item in listing.nftables:
        for elem in item.set.elem if item.set else []:
            if len(elem.concat) == 3:
                address, proto, port = elem.concat
                if isinstance(port, int) and proto in ("tcp", "udp"):
                    found.append((str(address), str(proto), port))
    return found


__all__ = ["DNS_PORT", "PROXY_PORT", "apply", "denied", "name_elements", "nsenter_argv",
           "ruleset", "update"]
