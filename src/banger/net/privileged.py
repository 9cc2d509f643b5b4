"""Privileged network operations behind one interface: in-process when the daemon holds
CAP_NET_ADMIN, else through banger's root helper (`bangerd-root`) on its Unix socket.

Both run the same validated operations (net.admin); the helper takes its bridge from its own
config (/etc/banger/root.toml), so a daemon using it must use the helper's subnet.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from pathlib import Path
from typing import Protocol

import msgspec

from banger.errors import Conflict, Unavailable
from banger.net import admin, links, rootwire
from banger.net.admin import Bridge
from banger.net.egress.nftset import Allowed

HELPER_SOCKET = Path("/run/banger/root.sock")
SOCKET_ENV = "BANGER_ROOT_SOCKET"  # another helper socket (tests, a second install)
INSTALL_HINT = ("tap networking as a normal user needs banger's root helper: run "
                "`sudo banger system install` (or use --net user, which needs no privilege)")
GROUP_HINT = ("you may not use banger's root helper: join its group (`sudo banger system "
              "install` as you, or `sudo usermod -aG banger $USER`) and log in again")
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
TIMEOUT = 30.0  # nft and netlink calls are fast; this bounds a stuck helper


class PrivilegedNet(Protocol):
    """What tap mode needs root for; each method is idempotent."""

    def bridge(self) -> Bridge: ...
    async def bridge_up(self) -> None: ...
    async def tap_add(self, tap: str, ip: str, mac: str) -> None: ...
    async def tap_delete(self, tap: str) -> bool: ...
    async def nat_enable(self, vm_id: str, ip: str) -> None: ...
    async def nat_disable(self, vm_id: str) -> None: ...
    async def egress_enable(self, vm_id: str, ip: str, resolver_port: int, proxy_port: int,
                            allow: Allowed) -> None: ...
    async def egress_update(self, vm_id: str, allow: Allowed, add_only: bool) -> None: ...
    async def egress_denied(self, vm_id: str) -> list[tuple[str, str, int]]: ...
    async def egress_disable(self, vm_id: str) -> None: ...


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process on the other end of a connected Unix socket."""
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                  _UCRED.size))
    return int(pid), int(uid), int(gid)


class InProcess:
    """The daemon itself may administer the network: the operations run here, as its uid."""

    def __init__(self, bridge: Bridge) -> None:
        self._bridge = bridge
        self.caller = os.geteuid()

    def bridge(self) -> Bridge:
        return self._bridge

    async def bridge_up(self) -> None:
        await admin.bridge_up(self._bridge)

    async def tap_add(self, tap: str, ip: str, mac: str) -> None:
        await admin.tap_add(self._bridge, tap, ip, mac, self.caller)

    async def tap_delete(self, tap: str) -> bool:
        return await admin.tap_delete(self._bridge, tap, self.caller)

    async def nat_enable(self, vm_id: str, ip: str) -> None:
        await admin.nat_enable(self._bridge, vm_id, ip, self.caller)

    async def nat_disable(self, vm_id: str) -> None:
        await admin.nat_disable(self._bridge, vm_id, self.caller)

    async def egress_enable(self, vm_id: str, ip: str, resolver_port: int, proxy_port: int,
                            allow: Allowed) -> None:
        await admin.egress_enable(self._bridge, vm_id, ip, resolver_port, proxy_port, allow,
                                  self.caller)

    async def egress_update(self, vm_id: str, allow: Allowed, add_only: bool) -> None:
        await admin.egress_update(self._bridge, vm_id, allow, add_only, self.caller)

    async def egress_denied(self, vm_id: str) -> list[tuple[str, str, int]]:
        return await admin.egress_denied(self._bridge, vm_id, self.caller)

    async def egress_disable(self, vm_id: str) -> None:
        await admin.egress_disable(self._bridge, vm_id, self.caller)


class HelperClient:
    """The root helper does them: one request per connection, its replies checked and capped."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def bridge(self) -> Bridge:
        reply = self.exchange(rootwire.Info())
        return Bridge(reply.bridge, reply.cidr)

    async def _call(self, request: rootwire.Request) -> rootwire.Reply:
        return await asyncio.to_thread(self.exchange, request)

    async def bridge_up(self) -> None:
        await self._call(rootwire.BridgeUp())

    async def tap_add(self, tap: str, ip: str, mac: str) -> None:
        await self._call(rootwire.TapAdd(name=tap, ip=ip, mac=mac))

    async def tap_delete(self, tap: str) -> bool:
        return (await self._call(rootwire.TapDelete(name=tap))).existed

    async def nat_enable(self, vm_id: str, ip: str) -> None:
        await self._call(rootwire.NatEnable(vm_id=vm_id, ip=ip))

    async def nat_disable(self, vm_id: str) -> None:
        await self._call(rootwire.NatDisable(vm_id=vm_id))

    async def egress_enable(self, vm_id: str, ip: str, resolver_port: int, proxy_port: int,
                            allow: Allowed) -> None:
        await self._call(rootwire.EgressEnable(vm_id, ip, resolver_port, proxy_port,
                                               rootwire.EgressSets.of(allow)))

    async def egress_update(self, vm_id: str, allow: Allowed, add_only: bool) -> None:
        await self._call(rootwire.EgressUpdate(vm_id, rootwire.EgressSets.of(allow), add_only))

    async def egress_denied(self, vm_id: str) -> list[tuple[str, str, int]]:
        return list((await self._call(rootwire.EgressDenied(vm_id=vm_id))).denied)

    async def egress_disable(self, vm_id: str) -> None:
        await self._call(rootwire.EgressDisable(vm_id=vm_id))

    def exchange(self, request: rootwire.Request) -> rootwire.Reply:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(TIMEOUT)
            self._connect(sock)
            if peer_credentials(sock)[1] != 0:
                raise Conflict(f"the process on {self.path} is not root; it is not banger's "
                               "root helper (remove the socket, then `sudo banger system install`)")
            try:
                sock.sendall(msgspec.json.encode(request))
                sock.shutdown(socket.SHUT_WR)
                data = read_capped(sock, rootwire.MAX_REPLY)
            except OSError as exc:  # a timeout too
                raise Unavailable(f"the root helper on {self.path} did not answer: {exc}; see its "
                                  "log (journalctl -u bangerd-root)") from None
            return rootwire.decode_reply(data)

    def _connect(self, sock: socket.socket) -> None:
        try:
            sock.connect(str(self.path))
        except PermissionError:
            raise Unavailable(GROUP_HINT) from None
        except (FileNotFoundError, ConnectionRefusedError):
            raise Unavailable(f"no root helper listening on {self.path}; {INSTALL_HINT}") from None
        except OSError as exc:
            raise Unavailable(f"cannot reach the root helper on {self.path}: {exc.strerror}; "
                              f"{INSTALL_HINT}") from None


def read_capped(sock: socket.socket, cap: int) -> bytes:
    """Everything until the peer's EOF, at most cap + 1 bytes (so 'too large' is detectable)."""
    chunks: list[bytes] = []
    size = 0
    while size <= cap:
        chunk = sock.recv(cap + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def privileged_net(bridge: Bridge) -> PrivilegedNet:
    """In-process with CAP_NET_ADMIN, else the root helper (its socket from the environment)."""
    if links.has_net_admin():
        return InProcess(bridge)
    return HelperClient(Path(os.environ.get(SOCKET_ENV) or HELPER_SOCKET))
