"""Who is on the other end of the daemon socket: both ends check, neither trusts the path alone.

Stdlib only, so the CLI's imports stay cheap.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
from pathlib import Path
from typing import Protocol

from banger.errors import Conflict

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class HasSockopt(Protocol):
    def getsockopt(self, level: int, option: int, buflen: int) -> bytes: ...


def peer_uid(sock: HasSockopt) -> int:
    """The effective uid of the process on the other end of a connected Unix socket."""
    _, uid, _ = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return int(uid)


def peer_pid(sock: HasSockopt) -> int:
    """The pid of the process on the other end, as this process's pid namespace sees it (0:
    not visible from here)."""
    pid, _, _ = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return int(pid)


def check_socket_file(path: Path) -> None:
    """Before connecting: the socket file is a socket of ours. FileNotFoundError when absent."""
    st = path.lstat()
    if not stat.S_ISSOCK(st.st_mode):
        raise Conflict(f"{path} is not a socket; remove it and retry")
    if st.st_uid != os.geteuid():
        raise Conflict(f"the daemon socket {path} is owned by uid {st.st_uid}, not you; "
                       "remove it and retry")


def check_daemon_peer(sock: socket.socket, path: Path) -> None:
    """After connecting, before sending anything: the daemon runs as this user."""
    uid = peer_uid(sock)
    if uid != os.geteuid():
        raise Conflict(f"the daemon on {path} runs as uid {uid}, not you; stop that process "
                       "and remove the socket")
