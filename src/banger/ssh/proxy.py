"""`banger vm ssh-proxy`: ssh's ProxyCommand, so `ssh NAME.vm` needs no resolver for `.vm`."""

from __future__ import annotations

import getpass
import os
import selectors
import socket

from banger.errors import InvalidArgument

CHUNK = 64 * 1024
CONNECT_TIMEOUT = 10.0


def vm_name(host: str, user: str | None = None) -> str:
    """The VM name in ssh's `%h`: `NAME`, `NAME.vm`, or `NAME.USER.vm` for the caller's own VMs."""
    name = host.lower().rstrip(".")
    name = name.removesuffix(".vm")
    if "." not in name:
        return name
    base, _, owner = name.rpartition(".")
    if owner != (user or getpass.getuser()).lower():
        raise InvalidArgument(f"{host} is not one of your VMs; banger's ssh proxy reaches only "
                              f"VMs of the user running it")
    return base


def connect(host: str, port: int) -> socket.socket:
    return socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)


def pump(sock: socket.socket, stdin: int = 0, stdout: int = 1) -> None:
    """Copy stdin to the socket and the socket to stdout until the guest side closes."""
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    sel.register(stdin, selectors.EVENT_READ)
    try:
        while True:
            for key, _ in sel.select():
                if key.fileobj is sock:
                    if not _to_stdout(sock, stdout):
                        return
                elif not _to_socket(stdin, sock):
                    sel.unregister(stdin)
                    sock.shutdown(socket.SHUT_WR)  # ssh is done sending: tell sshd, keep reading
    finally:
        sel.close()
        sock.close()


def _to_stdout(sock: socket.socket, stdout: int) -> bool:
    try:
        data = sock.recv(CHUNK)
    except BlockingIOError:
        return True
    except ConnectionResetError:
        return False
    if not data:
        return False
    view = memoryview(data)
    while view:
        view = view[os.write(stdout, view):]
    return True


def _to_socket(stdin: int, sock: socket.socket) -> bool:
    data = os.read(stdin, CHUNK)
    if not data:
        return False
    sock.setblocking(True)  # ssh paces itself; a blocking send keeps the loop simple
    try:
        sock.sendall(data)
    finally:
        sock.setblocking(False)
    return True
