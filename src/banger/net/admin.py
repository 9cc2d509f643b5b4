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

from banger.egress_rules import LOOPBACK
from banger.errors import Conflict, InvalidArgument
from banger.net import links, nat, tappin
from banger.net.egress import tapfilter
from banger.net.egress.nftset import MAX_ELEMENTS, Allowed
from banger.net.plan import gateway_of, tap_name
from banger.numbers import shown

log = logging.getLogger("banger.net.admin")
# vms make ids with secrets.token_hex(6); plan.tap_name() is "bt" + the id.
VM_ID = re.compile(r"[0-9a-f]{12}", re.ASCII)
TAP_NAME = re.compile(r"bt[0-9a-f]{12}", re.ASCII)
MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", re.ASCII)
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


def check_mac(mac: str) -> str:
    if not MAC.fullmatch(mac) or int(mac[:2], 16) & 1:
        raise InvalidArgument(f"refused: {shown(mac)} is not a unicast MAC address")
    return mac


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


async def tap_add(bridge: Bridge, tap: str, ip: str, mac: str, caller: int) -> None:
    """A tap on banger's bridge that the caller's VMM may open without privilege, pinned to
    the VM's address and MAC (it can speak as nothing else)."""
    check_tap_name(tap)
    check_vm_address(ip, bridge.cidr)
    check_mac(mac)
    await asyncio.to_thread(_check_may_change, bridge, tap, caller)
    await asyncio.to_thread(links.add_tap, bridge.netns, tap, bridge.name, caller)
    try:
        await tappin.pin(bridge.netns, tap, ip, mac, caller)
    except BaseException:
        await asyncio.to_thread(links.delete_link, bridge.netns, tap)
        raise
    log.info("tap %s for uid %d on %s as %s %s", tap, caller, bridge.name, ip, mac)


async def tap_delete(bridge: Bridge, tap: str, caller: int) -> bool:
    """True if it existed. Only its owner (or root) may delete it."""
    check_tap_name(tap)
    if not await asyncio.to_thread(_check_may_change, bridge, tap, caller):
        await tappin.unpin(bridge.netns, tap)  # a pin whose tap is gone: nothing to own
        return False
    existed = await asyncio.to_thread(links.delete_link, bridge.netns, tap)
    await tappin.unpin(bridge.netns, tap)
    return existed


async def nat_enable(bridge: Bridge, vm_id: str, ip: str, caller: int) -> None:
    check_vm_id(vm_id)
    check_vm_address(ip, bridge.cidr)
    await tappin.require_pinned_to(bridge.netns, tap_name(vm_id), ip, caller)  # your VM's address only
    await nat.enable(bridge.netns, bridge.name, vm_id, ip, caller)


async def nat_disable(bridge: Bridge, vm_id: str, caller: int) -> None:
    """Removes only the caller's rules for the VM (rules are tagged with their uid)."""
    check_vm_id(vm_id)
    await nat.disable(bridge.netns, vm_id, caller)


# ---- egress (tap): what the VM may reach, checked element by element before any nft runs

MAX_EGRESS_ELEMENTS = MAX_ELEMENTS  # what one nft transaction surely carries
MAX_EGRESS_RULES = 256


def check_allowed(allow: Allowed) -> Allowed:
    """Every element canonical IPv4 (never loopback), every port in range, counts bounded."""
    if allow.size() > MAX_EGRESS_ELEMENTS or len(allow.networks) > MAX_EGRESS_RULES or len(
            allow.host_ports) > MAX_EGRESS_RULES:
        raise InvalidArgument("refused: too many egress elements")
    for address in (*(a for a, _ in allow.pairs), *allow.every):
        _check_public_address(address)
    for port in (*(p for _, p in allow.pairs), *allow.host_ports):
        check_port(port)
    for cidr, net_port in allow.networks:
        try:
            net = ipaddress.IPv4Network(cidr)
        except ValueError:
            raise InvalidArgument(f"refused: {shown(cidr)} is not an IPv4 network") from None
        if str(net) != cidr or net.overlaps(LOOPBACK):
            raise InvalidArgument(f"refused: {shown(cidr)} is not an egress network")
        if net_port is not None:
            check_port(net_port)
    return allow


def _check_public_address(address: str) -> None:
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        raise InvalidArgument(f"refused: {shown(address)} is not an IPv4 address") from None
    if str(ip) != address or ip in LOOPBACK:
        raise InvalidArgument(f"refused: {shown(address)} is not an egress address")


def check_port(port: int, low: int = 1) -> int:
    if not low <= port <= 65535:
        raise InvalidArgument(f"refused: port {port} is out of range")
    return port


async def egress_enable(bridge: Bridge, vm_id: str, ip: str, resolver_port: int,
                        proxy_port: int, allow: Allowed, caller: int) -> None:
    """The VM's tap (bt + its id) may reach only `allow`; DNS and the host alias go to the
    caller's resolver and proxy on the gateway (unprivileged ports)."""
    check_vm_id(vm_id)
    check_vm_address(ip, bridge.cidr)
    check_port(resolver_port, 1024)
    check_port(proxy_port, 1024)
    vm = tapfilter.TapVm(vm_id, ip, tap_name(vm_id), caller)
    await tappin.require_pinned_to(bridge.netns, vm.tap, ip, caller)  # your VM's address only
    await tapfilter.enable(bridge.netns, bridge.name, bridge.cidr, vm, resolver_port, proxy_port,
                           check_allowed(allow))


async def egress_update(bridge: Bridge, vm_id: str, allow: Allowed, add_only: bool,
                        caller: int) -> None:
    check_vm_id(vm_id)
    await tapfilter.update(bridge.netns, vm_id, caller, check_allowed(allow), add_only=add_only)


async def egress_denied(bridge: Bridge, vm_id: str, caller: int) -> list[tuple[str, str, int]]:
    check_vm_id(vm_id)
    return await tapfilter.denied(bridge.netns, vm_id, caller)


async def egress_disable(bridge: Bridge, vm_id: str, caller: int) -> None:
    check_vm_id(vm_id)
    await tapfilter.disable(bridge.netns, vm_id, caller)
