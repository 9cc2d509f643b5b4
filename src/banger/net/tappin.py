"""Every tap speaks only as its VM (root side, through net.admin): in nftables' bridge family,
frames from a tap must carry the VM's MAC and, for IPv4 and ARP (the only types let through:
no IPv6, no VLAN tags), its address. Rules that name a VM's address by `ip saddr` (NAT,
egress) can then trust it, and the pin records which tap and uid an address belongs to.

Tagged `banger:pin:<tap>:<address>:<uid>`.
"""

from __future__ import annotations

import re

from banger.errors import Conflict
from banger.net.nft import BRIDGE_TABLE, BRIDGE_TABLE_DECLARATION, ROOT, TaggedRule, rules, run_script

_PIN = re.compile(r"banger:pin:(bt[0-9a-f]{12}):([0-9.]{7,15}):([0-9]{1,10})", re.ASCII)


def _tag(tap: str, ip: str, owner: int) -> str:
    return f"banger:pin:{tap}:{ip}:{owner}"


async def pins(netns: str) -> list[tuple[str, str, int, TaggedRule]]:
    """(tap, address, owner, rule) of every pin rule."""
    found = []
    for rule in await rules(netns, BRIDGE_TABLE):
        match = _PIN.fullmatch(rule.comment)
        if match:
            found.append((match[1], match[2], int(match[3]), rule))
    return found


def _removal(found: list[tuple[str, str, int, TaggedRule]], tap: str) -> str:
    return "".join(f"delete rule {BRIDGE_TABLE} pre handle {rule.handle}\n"
                   for pinned, _, _, rule in found if pinned == tap)


async def pin(netns: str, tap: str, ip: str, mac: str, owner: int) -> None:
    """The tap's rules, replacing its old ones in one transaction; an address another tap holds
    is refused. Each counts what it dropped (`nft list table bridge banger` shows a spoofer)."""
    found = await pins(netns)
    if any(address == ip and pinned != tap for pinned, address, _, _ in found):
        raise Conflict(f"refused: address {ip} belongs to another VM's tap")
    tag = f'comment "{_tag(tap, ip, owner)}"'
    src = f'add rule {BRIDGE_TABLE} pre iifname "{tap}"'
    await run_script(netns, BRIDGE_TABLE_DECLARATION + _removal(found, tap) + "".join(
        f"{src} {match} counter drop {tag}\n" for match in (
            f"ether saddr != {mac}", "ether type != { ip, arp }", f"ip saddr != {ip}",
            f"arp saddr ip != {ip}", f"arp saddr ether != {mac}")))


async def unpin(netns: str, tap: str) -> None:
    removal = _removal(await pins(netns), tap)
    if removal:
        await run_script(netns, removal)


async def require_pinned_to(netns: str, tap: str, ip: str, caller: int) -> None:
    """The address is pinned to this tap, which is the caller's (root: any tap)."""
    for pinned, address, owner, _ in await pins(netns):
        if pinned == tap and address == ip and caller in (ROOT, owner):
            return
    raise Conflict(f"refused: {ip} is not the address of your tap {tap}; start the VM first")
