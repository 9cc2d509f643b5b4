"""TCP connections from the daemon (root namespace) into a VM's network namespace.

setns() affects only the calling thread, so a worker thread enters the netns, creates the socket
(a socket keeps the namespace it was created in) and returns to the daemon's namespace.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_lock = threading.Lock()


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def netns_path(netns: str) -> Path:
    return Path("/run/netns") / netns


@contextmanager
def inside_netns(netns: str) -> Iterator[None]:
    """Run the block with this thread in netns (sockets made there stay there). No fork."""
    if not netns:
        yield
        return
    with _lock, open("/proc/thread-self/ns/net") as home, open(netns_path(netns)) as target:
        _setns(target.fileno())
        try:
            yield
        finally:
            _setns(home.fileno())


def socket_in_netns(netns: str, family: int = socket.AF_INET) -> socket.socket:
    with inside_netns(netns):
        return socket.socket(family, socket.SOCK_STREAM)


async def open_connection(netns: str, host: str, port: int, timeout: float = 5.0
                          ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = await asyncio.to_thread(socket_in_netns, netns)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (host, port)), timeout)
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)


async def answers_http(netns: str, host: str, port: int, timeout: float = 3.0) -> bool:
    """A quick HEAD /: any HTTP status line counts as answering."""
    try:
        reader, writer = await open_connection(netns, host, port, timeout)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(f"HEAD / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.read(5), timeout)  # no line: a guest may send none
        return head == b"HTTP/"
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
