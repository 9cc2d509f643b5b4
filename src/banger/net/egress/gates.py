"""The daemon's egress gates, one per running egress VM: prepared before launch (the firewall
file), opened after boot or a daemon restart, updated live, closed at stop."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from banger.egress_rules import Policy
from banger.errors import BangerError, InvalidArgument, Unavailable
from banger.net.egress import firewall
from banger.net.egress.gate import (
    Denial,
    Gate,
    load_resolved,
    log_file,
    original_port,
    read_log,
    resolved_file,
)
from banger.net.egress.nftset import Allowed, allowed
from banger.net.egress.nsfd import GateSockets, open_gate_sockets
from banger.net.egress.resolver import DnsProtocol, upstream_server
from banger.net.egress.tapgate import TapFront, TapWall
from banger.net.links import ipv4_addresses
from banger.net.plan import gateway_of
from banger.net.privileged import PrivilegedNet
from banger.runner import which

log = logging.getLogger("banger.net.egress")
FIREWALL_FILE = "egress.nft"
SLIRP_NET = ipaddress.IPv4Network(firewall.SLIRP_NET)


def check_supported(rules: Sequence[str], mode: str | None, nat: bool, vmm: str) -> None:
    """Refuse at create and `vm set` what egress rules cannot be enforced on."""
    if not rules:
        return
    if nat:
        raise InvalidArgument("--allow and --nat do not mix: --nat already allows everything; "
                              "drop one")
    if mode == "tap":
        return  # the root side (helper or root daemon) checks its own tools
    if mode != "user":
        raise InvalidArgument("--allow needs a network: add --net user or --net tap")
    if vmm != "qemu":
        raise InvalidArgument(f"--allow in user mode needs the qemu VMM (this daemon uses {vmm}"
                              "); add --net tap")
    for tool in ("nft", "slirp4netns", "nsenter", "setpriv", "ip"):
        if which(tool) is None:
            package = {"nft": "nftables", "nsenter": "util-linux", "setpriv": "util-linux",
                       "ip": "iproute2"}
            raise Unavailable(f"--allow needs {tool}: apt-get install "
                              f"{package.get(tool, tool)}")


class NamespaceWall:
    """nftables in a user-mode VM's own namespace, entered through its QEMU's pid."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    async def fill(self, allow: Allowed) -> None:
        await firewall.apply(self.pid, firewall.update(allow))

    async def grant(self, allow: Allowed) -> None:
        await firewall.apply(self.pid, firewall.grant(allow))

    async def denied(self) -> list[tuple[str, str, int]]:
        return await firewall.denied(self.pid)


class NamespaceFront:
    """A user-mode gate's resolver and proxy, on sockets made in its VM's namespace."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.sockets: GateSockets | None = None
        self.dns: DnsProtocol | None = None
        self.server: asyncio.Server | None = None

    async def open(self, pid: int) -> None:
        self.sockets = await open_gate_sockets(pid)
        loop = asyncio.get_running_loop()
        _, self.dns = await loop.create_datagram_endpoint(
            lambda: DnsProtocol(lambda _source: self.gate.resolver), sock=self.sockets.dns)
        self.server = await asyncio.start_server(self._proxy, sock=self.sockets.proxy)

    async def _proxy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        port = original_port(writer)
        if port is None:
            writer.close()
            return
        await self.gate.proxy(reader, writer, port)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        if self.dns is not None:
            self.dns.close()
        if self.sockets is not None:
            self.sockets.close()


@dataclass
class Opened:
    gate: Gate
    front: NamespaceFront | None = None  # user mode's own sockets; tap VMs share TapFront

    def close(self) -> None:
        if self.front is not None:
            self.front.close()
        self.gate.close()


class Gates:
    def __init__(self, upstream_dns: str, bridge_cidr: str, netns: str = "") -> None:
        self.upstream = upstream_server(upstream_dns)
        self.bridge_cidr = ipaddress.IPv4Network(bridge_cidr)
        self.netns = netns  # tap mode's namespace (bridge, taps), "" for the daemon's own
        self.gates: dict[str, Opened] = {}
        self.tap_front = TapFront(netns, str(gateway_of(bridge_cidr)), self._tap_gate)
        self.tap_ips: dict[str, str] = {}  # a tap VM's address -> its id
        self.tap_enabled: dict[str, tuple[int, int]] = {}  # id -> the front's ports it uses

    def blocked(self) -> list[ipaddress.IPv4Network]:
        """What no name may open: the host's own addresses and banger's networks."""
        spaces = {"", self.netns}
        own = [ipaddress.IPv4Network(a) for netns in spaces for a in ipv4_addresses(netns)]
        return [*own, self.bridge_cidr, SLIRP_NET]

    @staticmethod
    def fresh(vm_dir: Path) -> None:
        """A VM start: names are resolved again and the log starts empty."""
        resolved_file(vm_dir).unlink(missing_ok=True)
        log_file(vm_dir).unlink(missing_ok=True)

    def prepare(self, vm_dir: Path, rules: Sequence[str]) -> str:
        """The firewall file QEMU's namespace loads before QEMU starts."""
        self.fresh(vm_dir)
        path = vm_dir / FIREWALL_FILE
        path.write_text(firewall.ruleset(allowed(Policy.of(rules), {})))
        return str(path)

    async def open(self, vm_id: str, vm_dir: Path, pid: int, rules: Sequence[str]) -> None:
        self.close(vm_id)
        gate = Gate(vm_dir, NamespaceWall(pid), Policy.of(rules), self.upstream,
                    blocked=await asyncio.to_thread(self.blocked))
        front = NamespaceFront(gate)
        try:
            await gate.start()
            await front.open(pid)
        except BaseException:
            front.close()
            gate.close()
            raise
        self.gates[vm_id] = Opened(gate, front)

    async def ensure_tap(self, vm_id: str, vm_dir: Path, ip: str, rules: Sequence[str],
                         privileged: PrivilegedNet) -> None:
        """A tap VM's rules in banger's table, pointing at this daemon's resolver and proxy:
        before its VMM starts, and again when a restarted daemon listens on other ports."""
        ports = await self.tap_front.open()
        if self.tap_enabled.get(vm_id) == ports:
            return
        allow = allowed(Policy.of(rules), load_resolved(vm_dir),
                        await asyncio.to_thread(self.blocked))
        await privileged.egress_enable(vm_id, ip, ports[0], ports[1], allow)
        self.tap_enabled[vm_id] = ports

    async def open_tap(self, vm_id: str, vm_dir: Path, ip: str, rules: Sequence[str],
                       privileged: PrivilegedNet) -> None:
        stale = self.gates.pop(vm_id, None)  # a re-adopted VM: its rules may stay as they are
        if stale is not None:
            stale.gate.close()
        await self.ensure_tap(vm_id, vm_dir, ip, rules, privileged)
        gateway = self.tap_front.gateway
        gate = Gate(vm_dir, TapWall(privileged, vm_id), Policy.of(rules), self.upstream,
                    alias=gateway, alias_seen_as=gateway,
                    blocked=await asyncio.to_thread(self.blocked))
        await gate.start(fill=False)  # ensure_tap loaded the rules with what names resolved to
        self.gates[vm_id] = Opened(gate)
        self.tap_ips[ip] = vm_id

    def _tap_gate(self, source: str) -> Gate | None:
        opened = self.gates.get(self.tap_ips.get(source, ""))
        return opened.gate if opened else None

    async def update(self, vm_id: str, rules: Sequence[str]) -> None:
        """A running egress VM's new rules; its gate must be open to take them."""
        opened = self.gates.get(vm_id)
        if opened is None:
            raise Unavailable("this VM's egress gate is not open (its start or the daemon's "
                              "restart could not open it); restart the VM")
        await opened.gate.set_policy(Policy.of(rules))

    async def denied(self, vm_id: str, vm_dir: Path) -> list[Denial]:
        opened = self.gates.get(vm_id)
        if opened is not None:
            try:
                await opened.gate.collect()
            except BangerError as exc:
                log.info("egress log of %s not read: %s", vm_id, exc.message)
        return read_log(vm_dir)

    def close(self, vm_id: str) -> None:
        opened = self.gates.pop(vm_id, None)
        self.tap_ips = {ip: vm for ip, vm in self.tap_ips.items() if vm != vm_id}
        self.tap_enabled.pop(vm_id, None)
        if opened is not None:
            opened.close()

    def close_all(self) -> None:
        for vm_id in list(self.gates):
            self.close(vm_id)
        self.tap_front.close()


__all__ = ["Gates", "check_supported"]
