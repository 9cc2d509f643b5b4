"""Bridge and tap devices over netlink (pyroute2), in the root or a named network namespace."""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from banger.errors import Conflict, InvalidArgument, OperationFailed
from banger.net.nsock import inside_netns, netns_path
from banger.runner import run

log = logging.getLogger("banger.net")
logging.getLogger("pyroute2").setLevel(logging.WARNING)  # it logs every netlink message at debug
CAP_NET_ADMIN = 12


def has_net_admin() -> bool:
    """Capabilities, not uid: root without CAP_NET_ADMIN (a container) cannot make taps either."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    return False


@contextmanager
def netlink(netns: str) -> Iterator[Any]:
    from pyroute2 import IPRoute

    if netns and not netns_path(netns).exists():
        raise InvalidArgument(f"network namespace {netns!r} does not exist; create it with "
                              f"`ip netns add {netns}` or clear config netns")
    # pyroute2's NetNS forks a helper: a fork of the threaded daemon can hang, and the child
    # shares the daemon's signal wakeup fd. A netlink socket made inside the netns needs no fork.
    with inside_netns(netns):
        ipr = IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


def _index(ipr: Any, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


def _kind(link: Any) -> str | None:
    info = link.get("IFLA_LINKINFO") or link.get(("IFLA_LINKINFO",))
    if info is None:
        return None
    kind = info.get("IFLA_INFO_KIND") if hasattr(info, "get") else None
    return str(kind) if kind else None


def _overlapping_route(ipr: Any, cidr: ipaddress.IPv4Network) -> str | None:
    for route in ipr.get_routes(family=2):
        dst, dst_len = route.get("dst"), route.get("dst_len", 0)
        if not dst or dst_len == 0:
            continue  # the default route overlaps everything by design
        net = ipaddress.IPv4Network(f"{dst}/{dst_len}", strict=False)
        if net.prefixlen < 32 and net.overlaps(cidr):
            return str(net)
    return None


def ensure_bridge(netns: str, name: str, cidr: str) -> None:
    """Create the bridge with the CIDR's first address, or check an existing one is ours."""
    network = ipaddress.IPv4Network(cidr)
    gateway = str(next(network.hosts()))
    with netlink(netns) as ipr:
        idx = _index(ipr, name)
        if idx is not None:
            _check_existing_bridge(ipr, idx, name, gateway, network.prefixlen)
            return
        clash = _overlapping_route(ipr, network)
        if clash:
            raise InvalidArgument(f"bridge_cidr {cidr} overlaps the existing route {clash}; "
                                  "pick another bridge_cidr in config.toml")
        ipr.link("add", ifname=name, kind="bridge")
        try:
            idx = _index(ipr, name)
            ipr.addr("add", index=idx, address=gateway, prefixlen=network.prefixlen)
            ipr.link("set", index=idx, state="up")
        except Exception as exc:
            ipr.link("del", ifname=name)
            raise OperationFailed(f"cannot set up bridge {name}: {exc}") from exc
        log.info("created bridge %s %s/%d%s", name, gateway, network.prefixlen,
                 f" in netns {netns}" if netns else "")


def _check_existing_bridge(ipr: Any, idx: int, name: str, gateway: str, prefix: int) -> None:
    link = ipr.get_links(idx)[0]
    if _kind(link) != "bridge":
        raise Conflict(f"interface {name} exists and is not a bridge; set another bridge_name")
    addrs = {(a.get("IFA_ADDRESS"), a.get("prefixlen")) for a in ipr.get_addr(index=idx, family=2)}
    if (gateway, prefix) not in addrs:
        raise Conflict(f"bridge {name} exists without {gateway}/{prefix} (not banger's); "
                       "set another bridge_name or bridge_cidr")
    ipr.link("set", index=idx, state="up")


def tap_owner(netns: str, name: str) -> int | None:
    """The uid that may open tap `name` (-1: any with CAP_NET_ADMIN); None when absent.

    Conflict when `name` exists but is not a tap: never treat another interface as banger's.
    """
    with netlink(netns) as ipr:
        idx = _index(ipr, name)
        if idx is None:
            return None
        link = ipr.get_links(idx)[0]
    if _kind(link) != "tun":
        raise Conflict(f"interface {name} exists and is not a tap; remove it or pick another name")
    info = link.get("IFLA_LINKINFO")
    data = info.get("IFLA_INFO_DATA") if info is not None else None
    owner = data.get("IFLA_TUN_OWNER") if data is not None else None
    return int(owner) if owner is not None else -1


def add_tap(netns: str, tap: str, bridge: str, owner: int) -> None:
    """A persistent tap on the bridge that uid `owner` may open (its VMM needs no privilege)."""
    with netlink(netns) as ipr:
        if _index(ipr, tap) is not None:
            ipr.link("del", ifname=tap)  # a leftover from a crash
        # pyroute2 makes taps in a netns by forking a helper: unsafe in the threaded daemon.
        run(["ip", *(["-n", netns] if netns else []), "tuntap", "add", "dev", tap, "mode", "tap",
             "user", str(owner)], what="ip tuntap add")
        try:
            idx = _index(ipr, tap)
            ipr.link("set", index=idx, master=_index(ipr, bridge), state="up")
        except Exception as exc:
            ipr.link("del", ifname=tap)
            raise OperationFailed(f"cannot attach tap {tap} to {bridge}: {exc}") from exc


def delete_link(netns: str, name: str) -> bool:
    """True if it existed; a missing netns means there is nothing to delete."""
    if netns and not netns_path(netns).exists():
        return False
    with netlink(netns) as ipr:
        if _index(ipr, name) is None:
            return False
        ipr.link("del", ifname=name)
        return True


def link_names(netns: str) -> set[str]:
    if netns and not netns_path(netns).exists():
        return set()
    with netlink(netns) as ipr:
        return {str(link.get("ifname")) for link in ipr.get_links()}


def ipv4_addresses(netns: str = "") -> list[str]:
    """Every IPv4 address on an interface of this namespace (the host's own, by default)."""
    with netlink(netns) as ipr:
        return [str(a.get("IFA_ADDRESS")) for a in ipr.get_addr(family=socket.AF_INET)
                if a.get("IFA_ADDRESS")]
