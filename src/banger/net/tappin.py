"""Every tap speaks only as its VM (root side, through net.admin): in nftables' bridge family,
frames from a tap must carry the VM's MAC and, for IPv4 and ARP (the only types let through:
no IPv6, no VLAN tags), its address. Rules that name a VM's address by `ip saddr` (NAT,
egress) can then trust it, and the pin records which tap and uid an address belongs to.

Tagged `banger:pin:<tap>:<address>:<uid>`.
"""

from __future__ import annotations

import json
import re

from banger.errors import Conflict
from banger.net.nat import in_netns
from banger.runner import arun

BRIDGE = "bridge banger"
TABLE = (f"table {BRIDGE} {{\n"
         "  chain pre { type filter hook prerouting priority -200; }\n"
         "  chain between { type filter hook forward priority filter; }\n}\n")
_PIN = re.compile(r"banger:pin:(bt[0-9a-f]{12}):([0-9.]{7,15}):([0-9]{1,10})", re.ASCII)


def _tag(tap: str, ip: str, owner: int) -> str:
    return f"banger:pin:{tap}:{ip}:{owner}"


async def pins(netns: str) -> list[tuple[str, str, int, int]]:
    """(tap, address, owner, rule handle) of every pin rule."""
    res = await arun(in_netns(netns, ["nft", "-t", "-j", "list", "table", *BRIDGE.split()]),
                     check=False, timeout=20, what="nft")
    if not res.ok:
        return []
    found = []
    for item in json.loads(res.stdout).get("nftables", []):
        rule = item.get("rule")
        match = _PIN.fullmatch(str(rule.get("comment"))) if isinstance(rule, dict) else None
        if rule and match:
            found.append((match[1], match[2], int(match[3]), int(rule["handle"])))
    return found


def _removal(found: list[tuple[str, str, int, int]], tap: str) -> str:
    return "".join(f"delete rule {BRIDGE} pre handle {handle}\n"
                   for pinned, _, _, handle in found if pinned == tap)


async def pin(netns: str, tap: str, ip: str, mac: str, owner: int) -> None:
    """The tap's rules, replacing its old ones in one transaction; an address another tap holds
    is refused."""
    found = await pins(netns)
    if any(address == ip and pinned != tap for pinned, address, _, _ in found):
        raise Conflict(f"refused: address {ip} belongs to another VM's tap")
    tag = f'comment "{_tag(tap, ip, owner)}"'
    src = f'add rule {BRIDGE} pre iifname "{tap}"'
    script = TABLE + _removal(found, tap) + "".join(f"{src} {match} drop {tag}\n" for match in (
        f"ether saddr != {mac}", "ether type != { ip, arp }", f"ip saddr != {ip}",
        f"arp saddr ip != {ip}", f"arp saddr ether != {mac}"))
    await arun(in_netns(netns, ["nft", "-f", "-"]), input=script.encode(), timeout=20,
               what="nft (tap pin)")


async def unpin(netns: str, tap: str) -> None:
    removal = _removal(await pins(netns), tap)
    if removal:
        await arun(in_netns(netns, ["nft", "-f", "-"]), input=removal.encode(), timeout=20,
                   what="nft (tap pin)")


async def check_owner(netns: str, tap: str, ip: str, caller: int) -> None:
    """The address is pinned to this tap, which is the caller's (root: any tap)."""
    for pinned, address, owner, _ in await pins(netns):
        if pinned == tap and address == ip and (caller == 0 or owner == caller):
            return
    raise Conflict(f"refused: {ip} is not the address of your tap {tap}; start the VM first")
