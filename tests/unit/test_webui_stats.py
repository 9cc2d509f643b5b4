"""Dashboard numbers parsed from /proc-like files: strict, bounded, None when unreadable."""

from __future__ import annotations

import os
from pathlib import Path

from banger.daemon.webui.stats import DiskUse, ProcSampler, host_memory, tree_bytes

TICKS = os.sysconf("SC_CLK_TCK")


def fake_proc(root: Path, pid: int, *, name: str, ticks: int, start: int, rss_kb: int) -> None:
    d = root / str(pid)
    d.mkdir(parents=True, exist_ok=True)
    rest = ["S", *["0"] * 10, str(ticks), "0", *["0"] * 6, str(start), "0"]
    (d / "stat").write_text(f"{pid} ({name}) {' '.join(rest)}\n")
    (d / "status").write_text(f"Name:\t{name}\nVmRSS:\t{rss_kb} kB\n")


def test_cpu_over_life_then_between_samples(tmp_path: Path) -> None:
    (tmp_path / "uptime").write_text("110.00 50.00\n")
    # A name with spaces and ') (' must not shift the fields.
    fake_proc(tmp_path, 42, name="qemu ) (x", ticks=5 * TICKS, start=100 * TICKS, rss_kb=2048)
    sampler = ProcSampler(tmp_path)
    first = sampler.sample(42)
    assert first is not None and first.cpu_percent == 50.0 and first.rss_mib == 2.0
    assert sampler.sample(43) is None


def test_garbage_is_none(tmp_path: Path) -> None:
    d = tmp_path / "7"
    d.mkdir()
    (d / "stat").write_text("7 (x) S not numbers at all\n")
    (d / "status").write_text("VmRSS:\tlots kB\n")
    assert ProcSampler(tmp_path).sample(7) is None
    (tmp_path / "meminfo").write_text("MemTotal: 2048 kB\n")
    assert host_memory(tmp_path / "meminfo") is None  # MemAvailable missing
    (tmp_path / "meminfo").write_text("MemTotal: 4194304 kB\nMemAvailable: 1048576 kB\n")
    mem = host_memory(tmp_path / "meminfo")
    assert mem is not None and (mem.total_mib, mem.available_mib) == (4096, 1024)


def test_disk_use_counts_allocated_bytes_and_skips_symlinks(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 100_000)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"y" * 50_000)
    (tmp_path / "link").symlink_to("/usr")
    used = tree_bytes(tmp_path)
    assert 150_000 <= used < 400_000
    assert DiskUse(tmp_path).bytes() == used
