"""The helper's socket: who is calling (SO_PEERCRED, SO_PEERGROUPS), one capped request each,
one operation at a time, every refusal logged in one line."""

from __future__ import annotations

import asyncio
import errno
import grp
import logging
import os
import socket
import stat
from pathlib import Path
from typing import Any

import msgspec

from banger.errors import BangerError, Conflict, InternalError, InvalidArgument, Unavailable
from banger.net import admin, rootwire
from banger.net.admin import Bridge
from banger.net.privileged import peer_credentials
from banger.net.rootwire import Reply, Request
from banger.roothelper.config import RootConfig

log = logging.getLogger("bangerd-root")
SO_PEERGROUPS = 59  # Linux; the stdlib has no name for it
MAX_GROUPS = 256
MAX_READERS = 32  # connections whose request is being read at once
READ_TIMEOUT = 5.0
SD_LISTEN_FDS_START = 3


def peer_groups(sock: Any) -> set[int]:
    """The supplementary groups of the peer process, as the kernel holds them (not /etc/group)."""
    try:  # Python caps getsockopt buffers at 1024 bytes: 256 groups
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, MAX_GROUPS * 4)
    except OSError as exc:
        if exc.errno == errno.ERANGE:
            raise Conflict(f"refused: the caller is in more than {MAX_GROUPS} groups") from None
        raise
    return {int.from_bytes(raw[i:i + 4], "little") for i in range(0, len(raw) - 3, 4)}


def group_id(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


class Helper:
    def __init__(self, config: RootConfig) -> None:
        self.bridge = Bridge(config.bridge_name, config.bridge_cidr)
        self.group = config.group
        self.gid = group_id(config.group)
        self.lock = asyncio.Lock()  # one operation at a time: ownership checks stay true
        self.readers = asyncio.Semaphore(MAX_READERS)  # requests being read (up to 1 MiB each)

    def authorize(self, uid: int, gid: int, groups: set[int]) -> None:
        if uid == 0 or (self.gid is not None and (gid == self.gid or self.gid in groups)):
            return
        raise Conflict(f"refused: uid {uid} is not in group {self.group}; ask an admin to add "
                       "you (sudo banger system install) and log in again")

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        pid, uid, gid = peer_credentials(sock)
        if self.readers.locked():  # a group member holding many connections: refuse, not queue
            log.warning("uid %d pid %d: refused: %d requests are being read", uid, pid,
                        MAX_READERS)
            writer.write(rootwire.error_reply(Unavailable(
                "the root helper is busy (too many requests at once); try again")))
            writer.close()
            return
        try:
            async with self.readers:
                data = await _read_request(reader)  # read first: closing unread loses the reply
            self.authorize(uid, gid, peer_groups(sock))
            request = rootwire.decode_request(data)
            async with self.lock:
                reply = await self.dispatch(request, uid)
            log.info("uid %d pid %d: %s: ok", uid, pid, _describe(request))
            out = msgspec.json.encode(reply)
        except BangerError as exc:
            log.warning("uid %d pid %d: %s", uid, pid, exc.message)
            out = rootwire.error_reply(exc)
        except Exception:
            log.exception("uid %d pid %d: failed", uid, pid)
            out = rootwire.error_reply(InternalError("the root helper failed; see its log"))
        try:
            writer.write(out)
            await writer.drain()
        except OSError:
            pass  # the caller left; nothing to tell it
        finally:
            writer.close()

    async def dispatch(self, request: Request, uid: int) -> Reply:
        b = self.bridge
        match request:
            case rootwire.Info():
                return Reply(ok=True, bridge=b.name, cidr=b.cidr)
            case rootwire.BridgeUp():
                await admin.bridge_up(b)
            case rootwire.TapAdd(name=name, ip=ip, mac=mac):
                await admin.tap_add(b, name, ip, mac, uid)
            case rootwire.TapDelete(name=name):
                return Reply(ok=True, existed=await admin.tap_delete(b, name, uid))
            case rootwire.NatEnable(vm_id=vm_id, ip=ip):
                await admin.nat_enable(b, vm_id, ip, uid)
            case rootwire.NatDisable(vm_id=vm_id):
                await admin.nat_disable(b, vm_id, uid)
            case rootwire.EgressEnable():
                await admin.egress_enable(b, request.vm_id, request.ip, request.resolver_port,
                                          request.proxy_port, request.sets.allowed(), uid)
            case rootwire.EgressUpdate():
                await admin.egress_update(b, request.vm_id, request.sets.allowed(),
                                          request.add_only, uid)
            case rootwire.EgressDenied(vm_id=vm_id):
                return Reply(ok=True, denied=await admin.egress_denied(b, vm_id, uid))
            case rootwire.EgressDisable(vm_id=vm_id):
                await admin.egress_disable(b, vm_id, uid)
        return Reply(ok=True)


def _describe(request: Request) -> str:
    """For the log: only validated requests get here, so their fields are banger's own names
    (egress sets are counted, not listed)."""
    fields = " ".join(f"{k}={v}" for k, v in msgspec.structs.asdict(request).items()
                      if k != "sets")
    return f"{type(request).__name__} {fields}".strip()


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    """Until the caller's EOF, at most MAX_REQUEST + 1 bytes (more is refused when decoding)."""
    async def read() -> bytes:
        data = b""
        while len(data) <= rootwire.MAX_REQUEST:
            chunk = await reader.read(rootwire.MAX_REQUEST + 1 - len(data))
            if not chunk:
                break
            data += chunk
        return data

    try:
        return await asyncio.wait_for(read(), READ_TIMEOUT)
    except TimeoutError:
        raise InvalidArgument(f"refused: no complete request within {READ_TIMEOUT:.0f}s") from None


def listening_socket(path: Path, gid: int | None) -> socket.socket:
    """systemd's socket when activated, else a new one at path: root and the group, mode 0660."""
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and os.environ.get("LISTEN_FDS") == "1":
        return socket.socket(fileno=SD_LISTEN_FDS_START)
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    try:
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise Conflict(f"{path} exists and is not a socket; remove it or pass another --socket")
        path.unlink()  # a stale socket from a previous run
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # nobody but root can connect until the group is set below
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chown(path, 0, gid if gid is not None else 0)
    os.chmod(path, 0o660)
    sock.listen(16)
    return sock
