"""Publishing guest ports on 127.0.0.1: a small asyncio TCP proxy per forward (tap mode).

The proxy lives in the daemon, so it cannot outlive it: a crash leaves nothing behind, and the
daemon re-creates the forwards of running VMs when it starts again.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket

from banger.errors import Conflict
from banger.net.nsock import open_connection

log = logging.getLogger("banger.net.forward")
PUBLISH_HOST = "127.0.0.1"


def check_port_free(port: int, host: str = PUBLISH_HOST) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise Conflict(f"host port {port} on {host} is already in use; "
                               "pick another HOSTPORT") from None
            raise


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, asyncio.IncompleteReadError):
        pass


async def splice(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter) -> None:
    """Copy both ways until both sides are done, then close both."""
    await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
    for w in (writer, up_writer):
        with contextlib.suppress(OSError):
            w.close()


class Proxies:
    """Listening proxies keyed by VM id."""

    def __init__(self) -> None:
        self._servers: dict[str, list[asyncio.Server]] = {}
        self._ports: dict[str, list[int]] = {}

    async def add(self, vm_id: str, netns: str, guest_ip: str, host_port: int,
                  guest_port: int) -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await open_connection(netns, guest_ip, guest_port)
            except (OSError, TimeoutError):
                writer.close()
                return
            await splice(reader, writer, up_reader, up_writer)

        try:
            server = await asyncio.start_server(handle, PUBLISH_HOST, host_port)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise Conflict(f"host port {host_port} on {PUBLISH_HOST} is already in use; "
                               "pick another HOSTPORT") from None
            raise
        self._servers.setdefault(vm_id, []).append(server)
        self._ports.setdefault(vm_id, []).append(host_port)
        log.info("forward %s:%d -> %s:%d", PUBLISH_HOST, host_port, guest_ip, guest_port)

    def ports(self, vm_id: str) -> list[int]:
        return list(self._ports.get(vm_id, []))

    def close(self, vm_id: str) -> None:
        for server in self._servers.pop(vm_id, []):
            server.close()
        self._ports.pop(vm_id, None)
