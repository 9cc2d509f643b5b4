"""A fake VM's process: banger's real guest agent on a Unix socket, plus what a guest kernel and
VMM would show from outside. Run by tests/fakes/backend.py as a script; its stderr is the
console log.

  guest.py --unix SOCK --root DIR [--listen HOST:PORT]... [--fault panic|hang|configure]

panic: the "kernel" panics before the agent starts; hang: it prints nothing and never serves (the
early-boot hang); configure: the agent's configure operation fails. An agent `poweroff` ends the
process as a guest powering off ends its VMM, printing the kernel's "reboot: Power down".
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from typing import Any

from banger.guest.agent import system_ops

PANIC = "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)"


def console(line: str) -> None:
    os.write(2, (line + "\n").encode())


def power_off(agent: Any) -> None:
    console("reboot: Power down")
    os._exit(0)


def failing_configure(channel: Any, params: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError("configure failed in the fake guest")


def listen(where: str) -> socket.socket:
    """Hold a host forward's port, as QEMU's user-mode stack does while the VM runs."""
    host, _, port = where.rpartition(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, int(port)))
    sock.listen()
    return sock


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--unix", required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--listen", action="append", default=[])
    parser.add_argument("--fault", default="")
    args = parser.parse_args()
    held = [listen(where) for where in args.listen]  # noqa: F841 - kept open until exit
    if args.fault == "hang":
        while True:
            time.sleep(3600)
    console("banger-init: fake guest booting")
    if args.fault == "panic":
        console(PANIC)
        return 1
    if args.fault == "configure":
        system_ops.op_configure = failing_configure
    system_ops.power_off = power_off
    from banger.guest.agent import server  # after the patches: it registers the operations

    os.makedirs(args.root, exist_ok=True)
    return server.main(["--unix", args.unix, "--test-root", args.root])


if __name__ == "__main__":
    sys.exit(main())
