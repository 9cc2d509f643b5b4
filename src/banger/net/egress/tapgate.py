"""Tap VMs' egress on the daemon's side: the filter lives in banger's nftables table (through
the privileged interface: the root helper, or in-process as root), and one resolver socket and
one proxy listener on the bridge's gateway serve every tap VM, told apart by address (the
bridge table makes sure a VM sends only as its own)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from banger.net.egress.gate import Gate, original_port
from banger.net.egress.nftset import Allowed
from banger.net.egress.resolver import DnsProtocol, Resolver
from banger.net.nsock import inside_netns
from banger.net.privileged import PrivilegedNet


class TapWall:
    def __init__(self, privileged: PrivilegedNet, vm_id: str) -> None:
        self.privileged = privileged
        self.vm_id = vm_id

    async def fill(self, allow: Allowed) -> None:
        await self.privileged.egress_update(self.vm_id, allow, add_only=False)

    async def grant(self, allow: Allowed) -> None:
        await self.privileged.egress_update(self.vm_id, allow, add_only=True)

    async def denied(self) -> list[tuple[str, str, int]]:
        return await self.privileged.egress_denied(self.vm_id)


def _bound(netns: str, gateway: str, kind: int) -> socket.socket:
    with inside_netns(netns):  # the bridge's namespace: its gateway address is there
        sock = socket.socket(socket.AF_INET, kind)
    sock.bind((gateway, 0))
    sock.setblocking(False)
    return sock


class TapFront:
    """The gateway's resolver and proxy sockets, opened on first use."""

    def __init__(self, netns: str, gateway: str, gate_for: Callable[[str], Gate | None]) -> None:
        self.netns = netns
        self.gateway = gateway
        self.gate_for = gate_for
        self.dns: DnsProtocol | None = None
        self.server: asyncio.Server | None = None
        self.ports: tuple[int, int] | None = None  # resolver, proxy

    async def open(self) -> tuple[int, int]:
        if self.ports is not None:
            return self.ports
        udp = await asyncio.to_thread(_bound, self.netns, self.gateway, socket.SOCK_DGRAM)
        tcp = await asyncio.to_thread(_bound, self.netns, self.gateway, socket.SOCK_STREAM)
        loop = asyncio.get_running_loop()
        _, self.dns = await loop.create_datagram_endpoint(lambda: DnsProtocol(self._resolver),
                                                          sock=udp)
        self.server = await asyncio.start_server(self._proxy, sock=tcp)
        self.ports = (udp.getsockname()[1], tcp.getsockname()[1])
        return self.ports

    def _resolver(self, source: str) -> Resolver | None:
        gate = self.gate_for(source)
        return gate.resolver if gate else None

    async def _proxy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        gate = self.gate_for(str(peer[0])) if peer else None
        port = original_port(writer)
        if gate is None or port is None:
            writer.close()
            return
        await gate.proxy(reader, writer, port)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        if self.dns is not None:
            self.dns.close()
        self.ports = None
