"""The daemon's egress gates, one per running egress VM: prepared before launch (the firewall
file), opened after boot or a daemon restart, updated live, closed at stop."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Sequence
from pathlib import Path

from banger.errors import BangerError, InvalidArgument, Unavailable
from banger.net.egress import firewall
from banger.net.egress.gate import Denial, Gate, log_file, original_port, read_log, resolved_file
from banger.net.egress.nftset import Allowed, allowed
from banger.net.egress.nsfd import GateSockets, open_gate_sockets
from banger.net.egress.resolver import DnsProtocol, upstream_server
from banger.net.egress.rules import Policy
from banger.net.links import ipv4_addresses
from banger.runner import which

log = logging.getLogger("banger.net.egress")
FIREWALL_FILE = "egress.nft"
SLIRP_NET = ipaddress.IPv4Network("10.0.2.0/24")


def check_supported(rules: Sequence[str], mode: str | None, nat: bool, vmm: str) -> None:
    """Refuse at create and `vm set` what egress rules cannot be enforced on."""
    if not rules:
        return
    if nat:
        raise InvalidArgument("--allow and --nat do not mix: --nat already allows everything; "
                              "drop one")
    if mode != "user":
        raise InvalidArgument("--allow is enforced in user-mode networking only for now; "
                              "add --net user")
    if vmm != "qemu":
        raise InvalidArgument(f"--allow needs the qemu VMM (this daemon uses {vmm})")
    for tool in ("nft", "slirp4netns", "nsenter", "setpriv"):
        if which(tool) is None:
            package = {"nft": "nftables", "nsenter": "util-linux", "setpriv": "util-linux"}
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


class Gates:
    def __init__(self, upstream_dns: str, bridge_cidr: str) -> None:
        self.upstream = upstream_server(upstream_dns)
        self.bridge_cidr = ipaddress.IPv4Network(bridge_cidr)
        self.gates: dict[str, tuple[Gate, NamespaceFront]] = {}

    def blocked(self) -> list[ipaddress.IPv4Network]:
        """What no name may open: the host's own addresses and banger's networks."""
        own = [ipaddress.IPv4Network(address) for address in ipv4_addresses()]
        return [*own, self.bridge_cidr, SLIRP_NET]

    def prepare(self, vm_dir: Path, rules: Sequence[str]) -> str:
        """The firewall file QEMU's namespace loads before QEMU starts. A fresh start: names
        are resolved again and the log starts empty."""
        resolved_file(vm_dir).unlink(missing_ok=True)
        log_file(vm_dir).unlink(missing_ok=True)
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
        self.gates[vm_id] = (gate, front)

    async def update(self, vm_id: str, rules: Sequence[str]) -> None:
        """A running egress VM's new rules; its gate must be open to take them."""
        opened = self.gates.get(vm_id)
        if opened is None:
            raise Unavailable("this VM's egress gate is not open (its start or the daemon's "
                              "restart could not open it); restart the VM")
        await opened[0].set_policy(Policy.of(rules))

    async def denied(self, vm_id: str, vm_dir: Path) -> list[Denial]:
        opened = self.gates.get(vm_id)
        if opened is not None:
            try:
                await opened[0].collect()
            except BangerError as exc:
                log.info("egress log of %s not read: %s", vm_id, exc.message)
        return read_log(vm_dir)

    def close(self, vm_id: str) -> None:
        opened = self.gates.pop(vm_id, None)
        if opened is not None:
            opened[1].close()
            opened[0].close()

    def close_all(self) -> None:
        for vm_id in list(self.gates):
            self.close(vm_id)


__all__ = ["Gates", "check_supported"]
