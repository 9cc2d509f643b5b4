"""Firecracker's hybrid vsock, host side: a Unix socket plus a `CONNECT <port>` handshake."""

from __future__ import annotations

import asyncio

from banger.errors import Unavailable

HANDSHAKE_LINE_MAX = 64


async def connect_vsock(uds_path: str, port: int,
                        timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a stream to guest vsock `port`; Unavailable when nothing listens there (yet)."""
    try:
        return await asyncio.wait_for(_handshake(uds_path, port), timeout)
    except TimeoutError:
        raise Unavailable(f"guest vsock port {port} did not answer within {timeout:.0f}s "
                          f"(via {uds_path})") from None


async def _handshake(uds_path: str,
                     port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        reader, writer = await asyncio.open_unix_connection(uds_path)
    except OSError as e:
        raise Unavailable(f"cannot connect to firecracker's vsock socket {uds_path}: "
                          f"{e.strerror or e}") from None
    try:
        writer.write(f"CONNECT {port}\n".encode())
        await writer.drain()
        line = await reader.readline()
    except (OSError, asyncio.CancelledError):
        writer.close()
        raise
    if not line.startswith(b"OK ") or not line.endswith(b"\n") or len(line) > HANDSHAKE_LINE_MAX:
        writer.close()
        # Firecracker closes the connection when the guest has no listener on the port.
        raise Unavailable(f"guest refused vsock port {port} (nothing listens there yet): "
                          f"{line.decode(errors='replace').strip() or 'connection closed'}")
    return reader, writer
