"""The daemon's long-lived state, passed to every handler through the context."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field

from banger.artifacts import Artifacts
from banger.config import Config
from banger.paths import Paths
from banger.store import Store
from banger.vms.manager import VmManager


@dataclass
class Daemon:
    paths: Paths
    config: Config
    store: Store
    artifacts: Artifacts
    vms: VmManager
    started_at: float = field(default_factory=time.time)
    pid: int = field(default_factory=os.getpid)
    shutdown: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    # Every RPC operation running now, by op id: the web UI cancels CLI-started ones through it.
    running: dict[str, asyncio.Task[object]] = field(default_factory=dict)

    def cancel_op(self, op_id: str, why: str) -> bool:
        """Cancel a running RPC operation as its client's Ctrl-C would; False when none runs."""
        task = self.running.get(op_id)
        if task is None or task.done():
            return False
        task.cancel(why)
        return True
