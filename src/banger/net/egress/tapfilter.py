"""Egress rules for a tap VM, in banger's nftables tables (root: the root helper, or a root
daemon in-process). Called only through net.admin, which validates every field first.

A tap VM's packets reach the host through the bridge: routed ones (the outside, the gateway's
services) pass the inet table's forward and input hooks, where they go through the VM's verdict
chain; its DNS and host-alias connections to the gateway are redirected to the daemon's
resolver and proxy. Every tap is pinned to its VM's address (net/tappin.py), so `ip saddr` is
really the VM; an egress VM's frames also never reach other VMs directly at layer 2.
Everything carries the tag `banger:<vm id>:<uid>:egress`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from banger.egress_rules import LOOPBACK
from banger.errors import Conflict
from banger.net.egress.nftset import Allowed, Names, add, declarations, fill, parse_denied, verdict
from banger.net.nft import (
    BRIDGE_TABLE,
    BRIDGE_TABLE_DECLARATION,
    INET_TABLE,
    ROOT,
    TaggedRule,
    deletions,
    drop_if_unused,
    in_netns,
    rules,
    run_script,
)
from banger.net.plan import gateway_of
from banger.runner import arun

INET = INET_TABLE
BRIDGE = BRIDGE_TABLE
_TAG = re.compile(r"banger:([0-9a-f]{12}):([0-9]{1,10}):egress", re.ASCII)


@dataclass(frozen=True)
class TapVm:
    vm_id: str
    ip: str
    tap: str
    owner: int

    @property
    def tag(self) -> str:
        return f"banger:{self.vm_id}:{self.owner}:egress"


def _tag_of(vm_id: str, comment: object) -> int | None:
    """The owner uid in a comment that tags one of this VM's egress rules."""
    match = _TAG.fullmatch(str(comment))
    return int(match[2]) if match and match[1] == vm_id else None


def enable_script(bridge_name: str, cidr: str, vm: TapVm, resolver_port: int,
                  proxy_port: int, allow: Allowed) -> str:
    n = Names.for_vm(vm.vm_id)
    gw = str(gateway_of(cidr))
    tag = f'comment "{vm.tag}"'
    src = f'iifname "{bridge_name}" ip saddr {vm.ip}'
    base = (f"table {INET} {{\n"
            "  chain prerouting { type nat hook prerouting priority dstnat; }\n"
            "  chain input { type filter hook input priority filter; }\n"
            "  chain forward { type filter hook forward priority filter; }\n"
            "  chain postrouting { type nat hook postrouting priority srcnat; }\n}\n"
            + BRIDGE_TABLE_DECLARATION)
    own = "\n  ".join([*declarations(n),
                       f"chain {n.check} {{ {'; '.join(verdict(n, (str(LOOPBACK), cidr)))}; }}"])
    return base + f"table {INET} {{\n  {own}\n}}\n" + fill(INET, n, allow) + "\n".join([
        f"add rule {INET} prerouting {src} ip daddr {gw} udp dport 53 dnat ip to "
        f"{gw}:{resolver_port} {tag}",
        f"add rule {INET} prerouting {src} ip daddr {gw} tcp dport @{n.hosts} dnat ip to "
        f"{gw}:{proxy_port} {tag}",
        f"insert rule {INET} input {src} goto {n.check} {tag}",
        f"insert rule {INET} input {src} ct status dnat accept {tag}",
        f"insert rule {INET} input {src} ct direction reply accept {tag}",
        f"insert rule {INET} forward {src} goto {n.check} {tag}",
        f"insert rule {INET} forward {src} ct direction reply accept {tag}",
        f'insert rule {INET} forward oifname "{bridge_name}" ip daddr {vm.ip} ct state '
        f"established,related accept {tag}",
        f'add rule {INET} postrouting ip saddr {vm.ip} oifname != "{bridge_name}" masquerade '
        f"{tag}",
        f'add rule {BRIDGE} between iifname "{vm.tap}" drop {tag}',
        f'add rule {BRIDGE} between oifname "{vm.tap}" drop {tag}',
    ]) + "\n"


async def _tagged(netns: str, vm_id: str) -> list[tuple[TaggedRule, int]]:
    """Every rule tagged for this VM's egress, with its owner's uid."""
    found = []
    for table in (INET, BRIDGE):
        for rule in await rules(netns, table):
            owner = _tag_of(vm_id, rule.comment)
            if owner is not None:
                found.append((rule, owner))
    return found


def _refuse_others(vm_id: str, tagged: list[tuple[TaggedRule, int]], caller: int) -> None:
    if caller != ROOT and {owner for _, owner in tagged} - {caller}:
        raise Conflict(f"refused: VM {vm_id}'s egress rules belong to another user")


async def enable(netns: str, bridge_name: str, cidr: str, vm: TapVm, resolver_port: int,
                 proxy_port: int, allow: Allowed) -> None:
    """In one transaction with removing what was there: the VM is never without its rules."""
    tagged = await _tagged(netns, vm.vm_id)
    _refuse_others(vm.vm_id, tagged, vm.owner)
    await arun(in_netns(netns, ["sysctl", "-qw", "net.ipv4.ip_forward=1"]), what="sysctl")
    await run_script(netns, _removal(vm.vm_id, tagged) + enable_script(
        bridge_name, cidr, vm, resolver_port, proxy_port, allow))


async def update(netns: str, vm_id: str, caller: int, allow: Allowed, *, add_only: bool) -> None:
    tagged = await _tagged(netns, vm_id)
    _refuse_others(vm_id, tagged, caller)
    if not tagged:
        raise Conflict(f"VM {vm_id} has no egress rules to update; restart it")
    n = Names.for_vm(vm_id)
    await run_script(netns, "\n".join(add(INET, n, allow)) + "\n" if add_only
                     else fill(INET, n, allow))


async def denied(netns: str, vm_id: str, caller: int) -> list[tuple[str, str, int]]:
    tagged = await _tagged(netns, vm_id)
    _refuse_others(vm_id, tagged, caller)
    if not tagged:
        return []
    res = await arun(in_netns(netns, ["nft", "-j", "list", "set", *INET.split(),
                                      Names.for_vm(vm_id).denied]), timeout=20, what="nft")
    return parse_denied(res.stdout)


def _removal(vm_id: str, tagged: list[tuple[TaggedRule, int]]) -> str:
    """The statements removing the VM's egress rules, chains and sets ("" when none)."""
    if not tagged:
        return ""
    n = Names.for_vm(vm_id)
    chains = (n.check, n.networks, n.deny)  # emptied first: a chain goes only when empty
    return (deletions([rule for rule, _ in tagged])
            + "".join(f"flush chain {INET} {chain}\n" for chain in chains)
            + "".join(f"delete chain {INET} {chain}\n" for chain in chains)
            + "".join(f"delete set {INET} {name}\n"
                      for name in (n.pairs, n.every, n.hosts, n.denied)))


async def disable(netns: str, vm_id: str, caller: int) -> None:
    """Remove the VM's egress rules, chains and sets; safe when there are none. The inet table
    goes with its last rule; the bridge table stays while taps are pinned."""
    tagged = await _tagged(netns, vm_id)
    _refuse_others(vm_id, tagged, caller)
    if tagged:
        await run_script(netns, _removal(vm_id, tagged))
        await drop_if_unused(netns, INET)
