"""`bangerd-dns --listen HOST:PORT --zone-dir DIR`: the host's one `.vm` DNS server.

Every user's daemon publishes its running VMs in DIR/<uid>.json; this answers `NAME.USER.vm`
always and `NAME.vm` when exactly one user has a VM of that name. It runs unprivileged (a
systemd DynamicUser), and refuses root: it parses files other users write.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path

from banger.dns.server import serve
from banger.dns.zones import ZONE_DIR, Zones

log = logging.getLogger("bangerd-dns")
DEFAULT_LISTEN = "127.0.0.1:42069"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bangerd-dns", description=(
        "banger's .vm DNS for every user of the host, from the users' zone files."))
    parser.add_argument("--listen", default=DEFAULT_LISTEN,
                        help=f"HOST:PORT to answer on, UDP (default {DEFAULT_LISTEN})")
    parser.add_argument("--zone-dir", type=Path, default=ZONE_DIR,
                        help=f"where users' daemons write <uid>.json (default {ZONE_DIR})")
    return parser.parse_args(argv)


async def run(listen: str, zone_dir: Path) -> int:
    zones = Zones(zone_dir)

    def lookup(labels: list[str]) -> str | None:
        zones.refresh(time.monotonic())
        return zones.lookup(labels)

    transport = await serve(listen, by_path=lookup)
    if transport is None:
        return 1  # serve logged why
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("answering .vm from %s", zone_dir)
    await stop.wait()
    transport.close()
    return 0


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=os.environ.get("BANGER_LOG_LEVEL", "INFO").upper(),
                        stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)
    if os.geteuid() == 0:
        sys.exit("bangerd-dns: refusing to run as root: it reads files other users write; run it "
                 "as an unprivileged user (systemd: DynamicUser=yes)")
    host, sep, port = args.listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        sys.exit(f"bangerd-dns: --listen {args.listen!r} is not HOST:PORT such as {DEFAULT_LISTEN}")
    sys.exit(asyncio.run(run(args.listen, args.zone_dir)))
