"""A VM's event log: what happened to it that a user may want to know (fallbacks, restores)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from banger.store.db import utcnow

log = logging.getLogger("banger.vms.events")
FILE = "events.log"


def record(vm_dir: Path, message: str) -> None:
    log.info("%s: %s", vm_dir.name, message)
    vm_dir.mkdir(parents=True, exist_ok=True)
    with open(vm_dir / FILE, "a") as f:
        f.write(json.dumps({"time": utcnow(), "message": message}) + "\n")


def recent(vm_dir: Path, limit: int = 20) -> list[dict[str, str]]:
    try:
        lines = (vm_dir / FILE).read_text().splitlines()[-limit:]
    except OSError:
        return []
    return [json.loads(line) for line in lines if line.strip()]
