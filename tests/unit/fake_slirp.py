"""A Unix socket answering like slirp4netns's API, for tests of the forwarding code."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from banger.vmm.qemu import slirp


@contextmanager
def slirp_api(vm_dir: Path, answer: Callable[[bytes], bytes]) -> Iterator[None]:
    """Serve the VM dir's API socket: each request gets answer(request)."""
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(slirp.api_socket(vm_dir)))
    server.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(answer(conn.recv(65536)))

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield
    finally:
        server.close()
