"""`bangerd-root [--socket PATH] [--config FILE]`: serve until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from banger.errors import BangerError
from banger.net.privileged import HELPER_SOCKET
from banger.roothelper.config import ROOT_CONFIG, load_root_config
from banger.roothelper.server import Helper, listening_socket

log = logging.getLogger("bangerd-root")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bangerd-root", description=(
        "banger's root helper: tap, bridge and NAT operations for members of the banger group."))
    parser.add_argument("--socket", type=Path, default=HELPER_SOCKET,
                        help=f"where to listen (default {HELPER_SOCKET}; ignored when systemd "
                             "passes a socket)")
    parser.add_argument("--config", type=Path, default=ROOT_CONFIG,
                        help=f"the helper's settings (default {ROOT_CONFIG})")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    helper = Helper(load_root_config(args.config))
    if helper.gid is None:
        log.warning("group %s does not exist: only root may use the helper", helper.group)
    sock = listening_socket(args.socket, helper.gid)
    server = await asyncio.start_unix_server(helper.handle, sock=sock)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("serving bridge %s %s on %s", helper.bridge.name, helper.bridge.cidr, args.socket)
    async with server:
        await stop.wait()
    if "LISTEN_FDS" not in os.environ:
        with contextlib.suppress(FileNotFoundError):
            args.socket.unlink()


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("bangerd-root: must run as root (it manages the bridge, taps and NAT)")
    try:
        asyncio.run(serve(args))
    except BangerError as exc:
        sys.exit(f"bangerd-root: {exc}")
