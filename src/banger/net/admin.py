"""The privileged network operations, each validated: the root helper's whole job, and what a root
daemon calls in-process.

The bridge's name, address range and namespace come from banger's own settings, never from the
caller; a caller names only a tap, a VM id and a VM address, each checked against banger's
patterns here. Taps belong to a uid: only that uid (or root) may re-create or delete them, and
NAT rules are tagged with the uid that asked for them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from dataclasses import dataclass

from banger.errors import Conflict, InvalidArgument
from banger.net import links, nat
from banger.net.plan import gateway_of
from banger.numbers import shown

log = logging.getLogger("banger.net.admin")
# vms make ids with secrets.token_hex(6); plan.tap_name() is "bt" + the id.
VM_ID = re.compile(r"[0-9a-f]{12}", re.ASCII)
TAP_NAME = re.compile(r"bt[0-9a-f]{12}", re.ASCII)
ROOT = 0


@dataclass(frozen=True)
class Bridge:
    """banger's bridge: where taps go and whose subnet NAT rules may name."""

    name: str
    cidr: str
    netns: str = ""


def check_tap_name(name: str) -> str:
    if not TAP_NAME.fullmatch(name):
        raise InvalidArgument(f"refused: {shown(name)} is not a banger tap name "
                              "(bt and 12 hex digits)")
    return name


def check_vm_id(vm_id: str) -> str:
    if not VM_ID.fullmatch(vm_id):
        raise InvalidArgument(f"refused: {shown(vm_id)} is not a banger VM id (12 hex digits)")
    return vm_id


def check_vm_address(ip: str, cidr: str) -> str:
    """A host address of banger's subnet other than the gateway, written canonically."""
    try:
        addr = ipaddress.IPv4Address(ip)
    except ValueError:
        raise InvalidArgument(f"refused: {shown(ip)} is not an IPv4 address") from None
    net = ipaddress.IPv4Network(cidr)
    if str(addr) != ip or addr not in net or addr in (net.network_address, net.broadcast_address,
                                                      gateway_of(cidr)):
        raise InvalidArgument(f"refused: {shown(ip)} is not a VM address in banger's subnet {cidr}")
    return ip


def _check_may_change(bridge: Bridge, tap: str, caller: int) -> bool:
    """True if the tap exists; Conflict when it belongs to another uid (root may change any)."""
    owner = links.tap_owner(bridge.netns, tap)
    if owner is None:
        return False
    if caller != ROOT and owner != caller:
        raise Conflict(f"refused: tap {tap} belongs to uid {owner}, not you")
    return True


async def bridge_up(bridge: Bridge) -> None:
    await asyncio.to_thread(links.ensure_bridge, bridge.netns, bridge.name, bridge.cidr)


async def tap_add(bridge: Bridge, tap: str, caller: int) -> None:
    """A tap on banger's bridge that the caller's VMM may open without privilege."""
    check_tap_name(tap)
    await asyncio.to_thread(_check_may_change, bridge, tap, caller)
    await asyncio.to_thread(links.add_tap, bridge.netns, tap, bridge.name, caller)
    log.info("tap %s for uid %d on %s", tap, caller, bridge.name)


async def tap_delete(bridge: Bridge, tap: str, caller: int) -> bool:
    """True if it existed. Only its owner (or root) may delete it."""
    check_tap_name(tap)
    if not await asyncio.to_thread(_check_may_change, bridge, tap, caller):
        return False
    return await asyncio.to_thread(links.delete_link, bridge.netns, tap)


async def nat_enable(bridge: Bridge, vm_id: str, ip: str, caller: int) -> None:
    check_vm_id(vm_id)
    check_vm_address(ip, bridge.cidr)
    await nat.enable(bridge.netns, bridge.name, vm_id, ip, caller)


async def nat_disable(bridge: Bridge, vm_id: str, caller: int) -> None:
    """Removes only the caller's rules for the VM (rules are tagged with their uid)."""
    check_vm_id(vm_id)
    await nat.disable(bridge.netns, vm_id, caller)
