"""The daemon's side of `.vm`: publish its running VMs in the shared zone dir when the host has
one (bangerd-dns answers for every user), else answer on its own listener as before."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from banger.dns import zones
from banger.dns.server import serve
from banger.vms.repo import VmRepo

log = logging.getLogger("banger.dns")
DEBOUNCE_S = 0.05  # a start sets several fields in a row: write once after them


class ZonePublisher:
    """Rewrites `<dir>/<uid>.json` after VM changes (repo.on_change), removes it at close."""

    def __init__(self, directory: Path, running: Callable[[], dict[str, str]],
                 uid: int | None = None) -> None:
        self.directory = directory
        self.running = running
        self.uid = os.geteuid() if uid is None else uid
        self.dirty = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        self.written: dict[str, str] | None = None
        self.task: asyncio.Task[None] | None = None

    def changed(self) -> None:
        """Safe from any thread: the repo may be written from a worker thread."""
        with contextlib.suppress(RuntimeError):  # the loop is gone: nothing left to publish
            self.loop.call_soon_threadsafe(self.dirty.set)

    def publish(self) -> None:
        vms = self.running()
        if vms == self.written:
            return
        try:
            zones.write_zone(self.directory, self.uid, vms)
        except OSError as exc:  # e.g. another user planted our file in the sticky dir
            log.warning("cannot write %s: %s", self.directory / zones.file_name(self.uid), exc)
            return
        self.written = vms

    async def run(self) -> None:
        while True:
            await self.dirty.wait()
            await asyncio.sleep(DEBOUNCE_S)
            self.dirty.clear()
            self.publish()

    def start(self) -> None:
        self.publish()
        self.task = asyncio.create_task(self.run())

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        with contextlib.suppress(OSError):
            zones.remove_zone(self.directory, self.uid)


async def start(listen: str, repo: VmRepo) -> Callable[[], None]:
    """Serve or publish `.vm` for this daemon; returns what stops it."""
    directory = zones.zone_dir()
    if directory.is_dir():
        publisher = ZonePublisher(directory, repo.running_addresses)
        repo.on_change = publisher.changed
        publisher.start()
        log.info(".vm names published in %s for bangerd-dns",
                 directory / zones.file_name(publisher.uid))
        return publisher.close
    transport = await serve(listen, repo.running_address)
    return transport.close if transport is not None else lambda: None
