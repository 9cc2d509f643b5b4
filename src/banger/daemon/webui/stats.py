"""Numbers for the dashboard: host memory, state dir disk use, a VMM process's CPU and memory.

All read from /proc and the file system, bounded and parsed strictly; a value that cannot be
read is None and the page shows a dash.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from banger.config.host import meminfo_mib

_TICKS = os.sysconf("SC_CLK_TCK")
DISK_CACHE_S = 10.0  # walking the state dir is cheap but not free: at most every 10 s


@dataclass(frozen=True)
class HostMemory:
    total_mib: int
    available_mib: int


@dataclass(frozen=True)
class ProcStats:
    cpu_percent: float  # of one core, since the last sample (or the process's life)
    rss_mib: float


def host_memory(meminfo: Path = Path("/proc/meminfo")) -> HostMemory | None:
    total = meminfo_mib("MemTotal", meminfo)
    available = meminfo_mib("MemAvailable", meminfo)
    return None if total is None or available is None else HostMemory(total, available)


def tree_bytes(root: Path, limit: int = 200_000) -> int:
    """Bytes allocated on disk under root (sparse disks count what they use); symlinks not followed."""
    total = 0
    seen = 0
    stack = [root]
    while stack and seen < limit:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    seen += 1
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += st.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
        except OSError:
            continue
    return total


class DiskUse:
    """The state dir's size, cached: a dashboard refresh must not walk every image each time."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._at = -DISK_CACHE_S
        self._value = 0

    def bytes(self) -> int:
        now = time.monotonic()
        if now - self._at >= DISK_CACHE_S:
            self._value, self._at = tree_bytes(self.root), now
        return self._value


def _proc_ticks(pid: int, proc: Path) -> tuple[int, float] | None:
    """(utime + stime, start time in seconds since boot) of pid."""
    try:
        raw = (proc / str(pid) / "stat").read_text()[:4096]
    except OSError:
        return None
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    fields = raw[raw.rfind(")") + 2:].split()
    if len(fields) < 20 or not all(f.isdigit() for f in (fields[11], fields[12], fields[19])):
        return None
    return int(fields[11]) + int(fields[12]), int(fields[19]) / _TICKS


def _rss_mib(pid: int, proc: Path) -> float | None:
    try:
        for line in (proc / str(pid) / "status").read_text()[:8192].splitlines():
            if line.startswith("VmRSS:"):
                fields = line.split()
                return int(fields[1]) / 1024 if len(fields) > 1 and fields[1].isdigit() else None
    except OSError:
        return None
    return None


def _uptime(proc: Path) -> float | None:
    try:
        return float((proc / "uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class ProcSampler:
    """CPU use of VMM processes between two dashboard views (the first view: over its life)."""

    def __init__(self, proc: Path = Path("/proc")) -> None:
        self.proc = proc
        self._last: dict[int, tuple[int, float]] = {}  # pid -> (ticks, monotonic time)

    def sample(self, pid: int) -> ProcStats | None:
        ticks = _proc_ticks(pid, self.proc)
        rss = _rss_mib(pid, self.proc)
        if ticks is None or rss is None:
            self._last.pop(pid, None)
            return None
        now = time.monotonic()
        used, started = ticks
        previous = self._last.get(pid)
        if previous is not None and now - previous[1] > 0.05:
            cpu = (used - previous[0]) / _TICKS / (now - previous[1])
        else:
            uptime = _uptime(self.proc)
            life = (uptime - started) if uptime is not None else 0.0
            cpu = used / _TICKS / life if life > 0 else 0.0
        self._last[pid] = (used, now)
        if len(self._last) > 1024:  # pids of VMs long gone
            self._last.pop(next(iter(self._last)))
        return ProcStats(round(max(cpu, 0.0) * 100, 1), round(rss, 1))
