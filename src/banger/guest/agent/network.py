"""Guest agent: the guest's network identity (MAC, address, route, resolvers), set with ioctls
because every `ip` process costs ~0.1 s under TCG; `ip` is the fallback.
"""

from __future__ import annotations

import os

from . import protocol as proto
from .core import (
    Agent,
    AgentError,
    log,
    read_text,
    run_tool,
    write_file_atomic,
)

TYPE_CHECKING = False  # mypy treats this name as true; the guest never imports typing
if TYPE_CHECKING:
    from typing import Any


def configure_network(agent: Agent, net: dict[str, Any]) -> None:
    """Static IPv4 on the NIC with this MAC, default route and resolv.conf; no DHCP needed."""
    if not isinstance(net, dict) or not isinstance(net.get("mac"), str):
        raise AgentError(proto.E_BAD_REQUEST, "network must be {mac, address, gateway, dns}")
    dns = [str(server) for server in net.get("dns") or []]
    if dns:
        os.makedirs(agent.path("/etc"), exist_ok=True)
        resolv = agent.path("/etc/resolv.conf")
        if os.path.islink(resolv):
            os.unlink(resolv)  # e.g. a dangling link to systemd-resolved's stub
        text = "".join(f"nameserver {s}\n" for s in dns)
        if read_text(resolv) != text:  # a clone usually has it already: writes cost under TCG
            write_file_atomic(resolv, text, 0o644)
    if agent.testing:
        log(f"testing: not configuring interface {net['mac']}")
        return
    mac = net["mac"].lower()
    iface = interface_with_mac(mac)
    address = str(net.get("address") or "")
    gateway = str(net.get("gateway") or "")
    try:  # ioctls: every `ip` fork costs ~0.1 s under TCG
        configure_with_ioctls(iface, mac, address, gateway)
    except OSError as e:
        log(f"network ioctls failed ({e}); using ip")
        configure_with_ip(agent, iface, mac, address, gateway)


def configure_with_ip(agent: Agent, iface: str, mac: str, address: str, gateway: str) -> None:
    run_tool(agent, ["ip", "link", "set", iface, "address", mac, "up"])
    if address and address not in ipv4_addresses(iface):
        run_tool(agent, ["ip", "addr", "flush", "dev", iface, "scope", "global"])
        run_tool(agent, ["ip", "addr", "add", address, "dev", iface])
    if gateway and default_gateway() != gateway:
        run_tool(agent, ["ip", "route", "replace", "default", "via", gateway, "dev", iface])


SIOCADDRT, SIOCDELRT = 0x890B, 0x890C


SIOCGIFFLAGS, SIOCSIFFLAGS = 0x8913, 0x8914


SIOCGIFADDR, SIOCGIFNETMASK = 0x8915, 0x891B


SIOCSIFADDR, SIOCSIFNETMASK, SIOCSIFHWADDR = 0x8916, 0x891C, 0x8924


RTF_UP_GATEWAY = 0x3


def _ifreq(iface: str, payload: bytes = b"") -> bytes:
    import struct

    return struct.pack("16s", iface.encode()[:15]) + payload.ljust(24, b"\0")


def _sockaddr_in(address: str) -> bytes:
    import socket
    import struct

    return struct.pack("HH4s8x", socket.AF_INET, 0, socket.inet_aton(address))


def configure_with_ioctls(iface: str, mac: str, address: str, gateway: str) -> None:
    """MAC, link up, IPv4 address and default route; skips what the interface already has."""
    import fcntl
    import socket
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        # A clone restored from a template still has the template's MAC: give it its own.
        if read_text(f"/sys/class/net/{iface}/address").strip().lower() != mac:
            hwaddr = struct.pack("H6s", 1, bytes.fromhex(mac.replace(":", "")))  # ARPHRD_ETHER
            fcntl.ioctl(s.fileno(), SIOCSIFHWADDR, _ifreq(iface, hwaddr))
        flags = struct.unpack("H", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, _ifreq(iface))[16:18])[0]
        if not flags & 1:  # IFF_UP
            fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, _ifreq(iface, struct.pack("H", flags | 1)))
        if address and address not in ipv4_addresses(iface):
            ip, _, prefix = address.partition("/")
            bits = (0xFFFFFFFF << (32 - int(prefix or 32))) & 0xFFFFFFFF
            mask = socket.inet_ntoa(struct.pack("!I", bits))
            fcntl.ioctl(s.fileno(), SIOCSIFADDR, _ifreq(iface, _sockaddr_in(ip)))
            fcntl.ioctl(s.fileno(), SIOCSIFNETMASK, _ifreq(iface, _sockaddr_in(mask)))
        current = default_gateway()
        if gateway and current != gateway:
            if current:
                fcntl.ioctl(s.fileno(), SIOCDELRT, _rtentry(current))
            fcntl.ioctl(s.fileno(), SIOCADDRT, _rtentry(gateway))


def _rtentry(gateway: str) -> bytes:
    """struct rtentry for 0.0.0.0/0 via gateway (the kernel finds the device from the gateway)."""
    import struct

    any_address = _sockaddr_in("0.0.0.0")
    return struct.pack("@L16s16s16sHhLPhPLLH", 0, any_address, _sockaddr_in(gateway), any_address,
                       RTF_UP_GATEWAY, 0, 0, 0, 0, 0, 0, 0, 0).ljust(120, b"\0")


def ipv4_addresses(iface: str) -> list[str]:
    """ADDR/PREFIX of iface, read with ioctls (no `ip` process)."""
    import fcntl
    import socket
    import struct

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            req = _ifreq(iface)
            addr = socket.inet_ntoa(fcntl.ioctl(s.fileno(), SIOCGIFADDR, req)[20:24])
            mask = fcntl.ioctl(s.fileno(), SIOCGIFNETMASK, req)[20:24]
    except OSError:
        return []
    prefix = bin(struct.unpack("!I", mask)[0]).count("1")
    return [f"{addr}/{prefix}"]


def default_gateway() -> str:
    import socket
    import struct

    for line in read_text("/proc/net/route").splitlines()[1:]:
        fields = line.split()
        if len(fields) > 2 and fields[1] == "00000000":
            return socket.inet_ntoa(struct.pack("<I", int(fields[2], 16)))
    return ""


def interface_with_mac(mac: str) -> str:
    names = [n for n in sorted(os.listdir("/sys/class/net")) if n != "lo"]
    for name in names:
        if read_text(f"/sys/class/net/{name}/address").strip().lower() == mac:
            return name
    if len(names) == 1:
        return names[0]  # a guest restored from a snapshot keeps the template's MAC
    raise AgentError(proto.E_NOT_FOUND, f"no network interface with MAC {mac}")
