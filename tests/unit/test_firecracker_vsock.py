"""Agent over Firecracker's hybrid vsock: the host handshake client and the guest's listener.

A Unix-socket peer implements Firecracker's documented host-initiated handshake
(`CONNECT <port>\\n` -> `OK <host port>\\n`, or the connection closed when nothing listens on the
guest port) and hands accepted connections to the real guest agent (`--fd`), so the real host
client speaks the unchanged agent protocol across it. No vhost-vsock here, so the guest's
AF_VSOCK listener is checked for what this kernel can show: it binds the port from the
kernel command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger.agent.client import connect_stream
from banger.errors import Unavailable
from banger.guest.agent.server import transport_from_cmdline
from banger.vmm.base import VmHandles
from banger.vmm.firecracker.vsock import connect_vsock
from tests.unit.test_firecracker_api import backend

AGENT_PORT = 5252


class HybridVsockPeer:
    """Firecracker's side of the vsock Unix socket, with the guest agent behind one port."""

    def __init__(self, path: Path, ports: set[int]) -> None:
        self.path, self.ports = path, ports
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(4)
        self.agents: list[subprocess.Popen[bytes]] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            line = b""
            while not line.endswith(b"\n") and len(line) < 64:
                chunk = conn.recv(1)
                if not chunk:
                    break
                line += chunk
            parts = line.decode().split()
            if len(parts) == 2 and parts[0] == "CONNECT" and int(parts[1]) in self.ports:
                conn.sendall(b"OK 1073741824\n")
                self.agents.append(subprocess.Popen(
                    [sys.executable, "-m", "banger.guest.agent", "--fd", str(conn.fileno())],
                    pass_fds=[conn.fileno()], stderr=subprocess.DEVNULL))
            conn.close()  # refused: the guest reset the connection, Firecracker closes ours

    def close(self) -> None:
        self.listener.close()
        for proc in self.agents:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            if proc.poll() is None:
                proc.kill()


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[HybridVsockPeer]:
    p = HybridVsockPeer(tmp_path / "vsock.sock", {AGENT_PORT})
    yield p
    p.close()


def test_handshake_then_agent_protocol(peer: HybridVsockPeer) -> None:
    async def go() -> None:
        reader, writer = await connect_vsock(str(peer.path), AGENT_PORT, timeout=5)
        client = await connect_stream(reader, writer, timeout=10)
        assert (await client.health()).ok
        await client.close()

    asyncio.run(go())


def test_backend_open_agent_uses_the_handshake(tmp_path: Path, peer: HybridVsockPeer) -> None:
    handles = VmHandles("firecracker", 1, str(tmp_path / "api.sock"), str(peer.path),
                        extra={"vsock_port": str(AGENT_PORT)})

    async def go() -> None:
        reader, writer = await backend(tmp_path, False).open_agent(handles, 5)
        client = await connect_stream(reader, writer, timeout=10)
        assert (await client.health()).ok
        await client.close()

    asyncio.run(go())


def test_refused_port_is_unavailable(peer: HybridVsockPeer) -> None:
    with pytest.raises(Unavailable, match=r"guest refused vsock port 99 \(nothing listens"):
        asyncio.run(connect_vsock(str(peer.path), 99, timeout=5))


def test_missing_socket_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(Unavailable, match="cannot connect to firecracker's vsock socket"):
        asyncio.run(connect_vsock(str(tmp_path / "none.sock"), AGENT_PORT, timeout=1))


def test_agent_transport_from_kernel_cmdline() -> None:
    pick = transport_from_cmdline
    assert pick({}, "console=ttyS0 banger.agent=vsock:5252 quiet") == {"vsock-port": "5252"}
    assert pick({}, "console=ttyS0 quiet") == {}  # qemu: virtio-serial, as before
    assert pick({}, "banger.agent=vsock:x") == {}
    assert pick({"unix": "/a.sock"}, "banger.agent=vsock:5252") == {"unix": "/a.sock"}


def _vsock_available() -> bool:
    try:
        socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM).close()
        return True
    except (OSError, AttributeError):
        return False


@pytest.mark.skipif(not _vsock_available(), reason="no AF_VSOCK in this kernel")
def test_agent_listens_on_af_vsock_from_cmdline(tmp_path: Path) -> None:
    port = 40000 + (time.monotonic_ns() % 20000)
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(f"console=ttyS0 banger.agent=vsock:{port}\n")
    boot = ("import sys; from banger.guest.agent import server as a; "
            f"a.KERNEL_CMDLINE = {str(cmdline)!r}; sys.exit(a.main([]))")
    proc = subprocess.Popen([sys.executable, "-c", boot], stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        while not any("listening on vsock port" in line for line in lines):
            line = proc.stderr.readline()
            assert line, f"agent exited: {lines}"
            lines.append(line)
        assert f"listening on vsock port {port}" in lines[-1]
        probe = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        with pytest.raises(OSError) as info:
            probe.bind((socket.VMADDR_CID_ANY, port))  # the agent holds the port
        assert info.value.errno == errno.EADDRINUSE
        probe.close()
    finally:
        proc.kill()
        proc.wait(5)
