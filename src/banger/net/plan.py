"""Pure decisions: which mode, which addresses, which MAC, which published ports."""

from __future__ import annotations

import hashlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

import msgspec

from banger.errors import Conflict, InvalidArgument
from banger.numbers import parse_int, shown

# QEMU user networking's fixed guest view (inside QEMU only).
USER_GUEST_ADDRESS = "10.0.2.15/24"
USER_GATEWAY = "10.0.2.2"
USER_DNS = "10.0.2.3"
# Each user-mode VM gets one host loopback address from its user's pool, so `<name>.vm` is
# reachable: root keeps 127.77.0.0/16 (as before), every other uid one /24 of its own.
LOOPBACK_POOL = ipaddress.IPv4Network("127.77.0.0/16")
# 127.78.0.0 .. 127.254.255.0: 177 * 256 /24 blocks, picked by uid % USER_BLOCKS. Two uids equal
# modulo 45312 share a block (their VMs' forwards then fail to bind at start, not silently).
USER_BLOCKS = 177 * 256
MAX_PORT = 65535


class VmNet(msgspec.Struct, frozen=True):
    """What networking needs to know about a VM (the VM layer builds it from its record)."""

    id: str
    name: str
    mode: str | None  # "tap" | "user"; None: created before networking existed
    nat: bool = False
    ip: str | None = None  # tap address, or user mode's host loopback address
    mac: str | None = None
    publish: tuple[str, ...] = ()  # "HOSTPORT:GUESTPORT"
    egress: tuple[str, ...] = ()  # --allow rules: the VM reaches only these

    @property
    def isolated(self) -> bool:
        """User mode in a namespace of its own: out through slirp4netns (and the egress gate)."""
        return self.mode == "user" and (self.nat or bool(self.egress))


@dataclass(frozen=True)
class Publish:
    host_port: int
    guest_port: int

    def __str__(self) -> str:
        return f"{self.host_port}:{self.guest_port}"


def resolve_mode(requested: str | None, configured: str, netns: str) -> str:
    """`auto` is tap only when a netns is configured: a root-namespace bridge is opt-in."""
    mode = requested or configured
    if mode not in ("auto", "tap", "user"):
        raise InvalidArgument(f"invalid network mode {mode!r}: use auto, tap or user")
    if mode == "auto":
        return "tap" if netns else "user"
    return mode


def parse_publish(spec: str) -> Publish:
    """HOSTPORT:GUESTPORT, each 1..MAX_PORT in ASCII digits (int() would take '²' and '٣')."""
    host, sep, guest = spec.partition(":")
    host_port, guest_port = (_port(host), _port(guest)) if sep else (None, None)
    if host_port is None or guest_port is None:
        raise InvalidArgument(f"invalid port mapping {shown(spec)}: use HOSTPORT:GUESTPORT with "
                              f"ports in 1..{MAX_PORT}, e.g. 8080:80")
    return Publish(host_port, guest_port)


def _port(text: str) -> int | None:
    try:
        return parse_int(text, what="port", low=1, high=MAX_PORT)
    except InvalidArgument:
        return None


def mac_for(vm_id: str) -> str:
    """Stable, locally administered MAC derived from the VM id (QEMU's 52:54:00 prefix)."""
    digest = hashlib.sha256(vm_id.encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def tap_name(vm_id: str) -> str:
    return f"bt{vm_id}"[:15]  # IFNAMSIZ - 1


def gateway_of(cidr: str) -> ipaddress.IPv4Address:
    net = ipaddress.IPv4Network(cidr)
    return next(net.hosts())


def allocate_ip(cidr: str, taken: set[str]) -> str:
    """Lowest free host address after the gateway (deterministic)."""
    net = ipaddress.IPv4Network(cidr)
    gateway = gateway_of(cidr)
    for addr in net.hosts():
        if addr != gateway and str(addr) not in taken:
            return str(addr)
    raise Conflict(f"no free address left in bridge_cidr {cidr} ({len(taken)} VMs hold one); "
                   "delete a VM or configure a larger bridge_cidr")


def loopback_pool(uid: int | None = None) -> ipaddress.IPv4Network:
    """The loopback block this uid's user-mode VMs take addresses from (default: ours)."""
    uid = os.geteuid() if uid is None else uid
    if uid == 0:
        return LOOPBACK_POOL
    block = uid % USER_BLOCKS
    return ipaddress.IPv4Network(f"127.{78 + block // 256}.{block % 256}.0/24")


def own_loopback(uid: int | None = None) -> str:
    """The first address of this uid's block: never a VM's, so a page there shares no cookie
    host with a guest's server (the web UI listens on it)."""
    return str(loopback_pool(uid).network_address + 1)


def allocate_loopback(taken: set[str], uid: int | None = None) -> str:
    for addr in loopback_pool(uid).hosts():
        if addr.packed[-1] in (0, 1, 255) or str(addr) in taken:
            continue
        return str(addr)
    raise Conflict("no free loopback address left for user-mode VMs; delete a VM")


RESOLV_CONF = Path("/etc/resolv.conf")


def nameservers(resolv_conf: Path = RESOLV_CONF) -> list[str]:
    """The `nameserver` addresses of a resolv.conf, in order ([] when it cannot be read)."""
    try:
        lines = resolv_conf.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line.split()[1] for line in lines
            if line.startswith("nameserver") and len(line.split()) > 1]
