"""The ssh ProxyCommand: the generated block, the name it accepts, the byte pump."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from banger.errors import InvalidArgument
from banger.ssh import config as sshcfg
from banger.ssh import proxy


def test_block_proxies_through_banger_quoted() -> None:
    block = sshcfg.host_block(Path("/k"), Path("/kh"), ["/opt/my banger/bin/banger"])
    assert "    ProxyCommand '/opt/my banger/bin/banger' vm ssh-proxy '%h'\n" in block
    assert sshcfg.host_block(Path("/k"), Path("/kh"), ["/x%y"]).count("/x%%y") == 1


@pytest.mark.parametrize(("host", "name"), [("web", "web"), ("web.vm", "web"), ("WEB.VM.", "web"),
                                           ("web.alice.vm", "web")])
def test_vm_name_from_ssh_host(host: str, name: str) -> None:
    assert proxy.vm_name(host, user="alice") == name


def test_another_users_vm_is_refused_in_one_line() -> None:
    with pytest.raises(InvalidArgument, match="not one of your VMs"):
        proxy.vm_name("web.bob.vm", user="alice")


def test_pump_copies_both_ways_and_half_closes() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    got: list[bytes] = []

    def echo_upper() -> None:
        conn, _ = server.accept()
        with conn:
            data = b""
            while chunk := conn.recv(4096):  # ends only when the proxy half-closes
                data += chunk
            got.append(data)
            conn.sendall(data.upper())

    thread = threading.Thread(target=echo_upper)
    thread.start()
    stdin_r, stdin_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    payload = b"ssh-2.0 hello\n" * 5000
    writer = threading.Thread(target=_write_and_close, args=(stdin_w, payload))
    out = bytearray()
    reader = threading.Thread(target=lambda: _read_all(stdout_r, out))
    writer.start()
    reader.start()
    proxy.pump(proxy.connect("127.0.0.1", server.getsockname()[1]), stdin_r, stdout_w)
    os.close(stdout_w)
    for t in (thread, writer, reader):
        t.join()
    assert got == [payload] and out == payload.upper()


def _read_all(fd: int, into: bytearray) -> None:
    while chunk := os.read(fd, 65536):
        into += chunk


def _write_and_close(fd: int, data: bytes) -> None:
    os.write(fd, data)
    os.close(fd)
