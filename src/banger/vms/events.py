"""A VM's event log: what happened to it that a user may want to know (fallbacks, restores)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from banger.logfiles import tail_bytes
from banger.store.db import utcnow
from banger.textsafe import one_line

log = logging.getLogger("banger.vms.events")
FILE = "events.log"
MESSAGE_LIMIT = 1000  # messages quote errors that may carry guest text


def record(vm_dir: Path, message: str) -> None:
    message = one_line(message, MESSAGE_LIMIT)
    log.info("%s: %s", vm_dir.name, message)
    vm_dir.mkdir(parents=True, exist_ok=True)
    with open(vm_dir / FILE, "a") as f:
        f.write(json.dumps({"time": utcnow(), "message": message}) + "\n")


def recent(vm_dir: Path, limit: int = 20) -> list[dict[str, str]]:
    """The last `limit` events, read from the end of the file (it only grows)."""
    lines = tail_bytes(vm_dir / FILE, 64 * 1024).decode(errors="replace").splitlines()
    events = []
    for line in lines[-limit:]:
        try:
            event = json.loads(line)
        except ValueError:  # the first line of the tail may be cut in half
            continue
        if isinstance(event, dict):
            events.append({"time": str(event.get("time", "")), "message": str(event.get("message", ""))})
    return events
