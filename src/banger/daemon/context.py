"""What a handler gets: the daemon's state, its op id, and a way to talk to the caller."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from banger.errors import BangerError
from banger.rpc import wire

if TYPE_CHECKING:
    from banger.daemon.state import Daemon


@dataclass
class Context:
    daemon: Daemon
    op_id: str
    method: str
    writer: asyncio.StreamWriter
    inbox: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("banger.op"))
    _last_progress: float = 0.0
    client_error: BangerError | None = None  # set when the client's input broke the envelope

    def send(self, message: dict[str, Any]) -> None:
        if not self.writer.is_closing():
            self.writer.write(wire.encode(message))

    def progress(self, stage: str, fraction: float | None = None, message: str = "") -> None:
        """Report a stage; fractional updates are throttled so a download can't flood the socket."""
        now = time.monotonic()
        if fraction is not None and 0 < fraction < 1 and now - self._last_progress < 0.1:
            return
        self._last_progress = now
        self.log.info("stage %s %s %s", stage, "" if fraction is None else f"{fraction:.0%}",
                      message)
        self.send({"type": "progress", "stage": stage, "fraction": fraction, "message": message})

    def info(self, message: str) -> None:
        """A line the CLI prints as is (e.g. the VM spec before the progress stages)."""
        self.send({"type": "info", "message": message})

    def send_data(self, stream: str, data: bytes | memoryview) -> None:
        """Output as binary frames: a {"type":"data","stream":..,"len":N} line, then N bytes."""
        if not self.writer.is_closing():
            self.writer.writelines(wire.frames({"type": "data", "stream": stream}, data))

    async def drain(self) -> None:
        await self.writer.drain()
