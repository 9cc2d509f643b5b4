"""Host facts used for defaults: CPU count and memory."""

from __future__ import annotations

import os
from pathlib import Path


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def meminfo_mib(key: str, meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """One /proc/meminfo field (MemTotal, MemAvailable...) in MiB; None when unreadable."""
    try:
        with meminfo.open() as f:
            for line in f:
                name, _, rest = line.partition(":")
                fields = rest.split()
                if name == key and fields and fields[0].isdigit():
                    return int(fields[0]) // 1024
    except OSError:
        pass
    return None


def memory_mib() -> int:
    return meminfo_mib("MemTotal") or 4096


def available_mib() -> int:
    return meminfo_mib("MemAvailable") or 0
