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

import json
from dataclasses import dataclass

from banger.errors import Conflict
from banger.net import tappin
from banger.net.egress.nftset import Allowed, Names, add, declarations, fill, parse_denied, verdict
from banger.net.nat import in_netns
from banger.net.plan import gateway_of
from banger.runner import arun

INET = "inet banger"
BRIDGE = tappin.BRIDGE
ROOT = 0


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
    parts = str(comment).split(":")
    if len(parts) == 4 and parts[0] == "banger" and parts[1] == vm_id and parts[3] == "egress":
        return int(parts[2]) if parts[2].isdigit() else None
    return None


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
            + tappin.TABLE)
    own = "\n  ".join([*declarations(n),
                       f"chain {n.check} {{ {'; '.join(verdict(n, ('127.0.0.0/8', cidr)))}; }}"])
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


async def _nft(netns: str, script: str, *, check: bool = True) -> str:
    res = await arun(in_netns(netns, ["nft", "-f", "-"]), input=script.encode(), check=check,
                     timeout=20, what="nft (tap egress)")
    return res.stdout


async def _tagged(netns: str, vm_id: str) -> list[tuple[str, str, int, int]]:
    """(table, chain, handle, owner) of every rule tagged for this VM's egress."""
    found = []
    for table in (INET, BRIDGE):
        res = await arun(in_netns(netns, ["nft", "-t", "-j", "list", "table", *table.split()]),
                         check=False, timeout=20, what="nft")
        if not res.ok:
            continue
        for item in json.loads(res.stdout).get("nftables", []):
            rule = item.get("rule")
            owner = _tag_of(vm_id, rule.get("comment")) if isinstance(rule, dict) else None
            if rule and owner is not None:
                found.append((table, str(rule["chain"]), int(rule["handle"]), owner))
    return found


async def _check_owner(netns: str, vm_id: str, caller: int) -> bool:
    """True if the VM has egress rules; Conflict when they are another uid's."""
    owners = {rule[3] for rule in await _tagged(netns, vm_id)}
    if caller != ROOT and owners - {caller}:
        raise Conflict(f"refused: VM {vm_id}'s egress rules belong to another user")
    return bool(owners)


async def enable(netns: str, bridge_name: str, cidr: str, vm: TapVm, resolver_port: int,
                 proxy_port: int, allow: Allowed) -> None:
    """In one transaction with removing what was there: the VM is never without its rules."""
    old = await _removal(netns, vm.vm_id, vm.owner)
    await arun(in_netns(netns, ["sysctl", "-qw", "net.ipv4.ip_forward=1"]), what="sysctl")
    await _nft(netns, old + enable_script(bridge_name, cidr, vm, resolver_port, proxy_port,
                                          allow))


async def update(netns: str, vm_id: str, caller: int, allow: Allowed, *, add_only: bool) -> None:
    if not await _check_owner(netns, vm_id, caller):
        raise Conflict(f"VM {vm_id} has no egress rules to update; restart it")
    n = Names.for_vm(vm_id)
    script = "\n".join(add(INET, n, allow)) + "\n" if add_only else fill(INET, n, allow)
    await _nft(netns, script)


async def denied(netns: str, vm_id: str, caller: int) -> list[tuple[str, str, int]]:
    if not await _check_owner(netns, vm_id, caller):
        return []
    res = await arun(in_netns(netns, ["nft", "-j", "list", "set", *INET.split(),
                                      Names.for_vm(vm_id).denied]), timeout=20, what="nft")
    return parse_denied(res.stdout)


async def _removal(netns: str, vm_id: str, caller: int) -> str:
    """The statements removing the VM's egress rules, chains and sets ("" when none)."""
    if not await _check_owner(netns, vm_id, caller):
        return ""
    n = Names.for_vm(vm_id)
    lines = [f"delete rule {table} {chain} handle {handle}"
             for table, chain, handle, _ in await _tagged(netns, vm_id)]
    chains = (n.check, n.networks, n.deny)  # emptied first: a chain goes only when empty
    lines += [f"flush chain {INET} {chain}" for chain in chains]
    lines += [f"delete chain {INET} {chain}" for chain in chains]
    lines += [f"delete set {INET} {name}" for name in (n.pairs, n.every, n.hosts, n.denied)]
    return "\n".join(lines) + "\n"


async def disable(netns: str, vm_id: str, caller: int) -> None:
    """Remove the VM's egress rules, chains and sets; safe when there are none."""
    removal = await _removal(netns, vm_id, caller)
    if removal:
        await _nft(netns, removal)
        await _drop_empty_tables(netns)


async def _drop_empty_tables(netns: str) -> None:
    """The tables go with their last VM rule (NAT's base rule alone keeps nothing)."""
    for table in (INET, BRIDGE):
        res = await arun(in_netns(netns, ["nft", "-t", "-j", "list", "table", *table.split()]),
                         check=False, timeout=20, what="nft")
        if not res.ok:
            continue
        items = json.loads(res.stdout).get("nftables", [])
        rules = [i["rule"] for i in items if isinstance(i.get("rule"), dict)]
        sets = [i for i in items if "set" in i]
        if not sets and all(rule.get("comment") == "banger:base" for rule in rules):
            await _nft(netns, f"delete table {table}\n", check=False)
