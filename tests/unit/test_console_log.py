"""Console logs stay bounded and their tails are read by seeking (issue 12, item 7)."""

from __future__ import annotations

import asyncio
import os
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from banger.errors import OperationFailed
from banger.logfiles import Follower, rotate, rotated
from banger.vmm.base import Backend, BootArtifacts, VmHandles, VmSpec
from banger.vms import coldboot, events

MIB = 1 << 20
HOSTILE_LINE = "\x1b]0;X\x07[red]Y \u009b2J\n".encode()


def big_console(tmp_path: Path, size: int = 64 * MIB) -> Path:
    """A sparse console of `size` bytes whose last lines are what a guest printed."""
    path = tmp_path / "console.log"
    with open(path, "wb") as f:
        f.truncate(size)
    with open(path, "ab") as f:
        f.write(b"banger-initramfs: mounted root\n" + HOSTILE_LINE + b"reboot: Power down\n")
    return path


def peak_bytes(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_tails_of_a_huge_console_stay_small_in_memory(tmp_path: Path) -> None:
    path = big_console(tmp_path)
    from banger.vmm.firecracker.backend import _tail

    for read in (lambda: coldboot.console_tail(path), lambda: _tail(path),
                 lambda: coldboot._console_since(path, 0)):
        assert peak_bytes(read) < 4 * MIB  # 64 MiB on disk; the old code read all of it
    assert coldboot.console_tail(path, 1) == "reboot: Power down"


def test_console_text_in_errors_is_one_clean_line(tmp_path: Path) -> None:
    path = big_console(tmp_path, 0)
    tail = coldboot.console_tail(path)
    assert "\x1b" not in tail and "\x07" not in tail and "\u009b" not in tail and "\n" not in tail
    assert "]0;X[red]Y" in tail
    spec = VmSpec("id", "vm1", 1, 512, 1024, tmp_path, BootArtifacts(path, path, path))
    dog = coldboot.Watchdog(cast(Backend, FakeBackend(alive=False)), HANDLES, spec, timeout=60)
    with pytest.raises(OperationFailed) as info:
        dog.check()
    assert "\x1b" not in info.value.message and "[red]Y" in info.value.message


class FakeBackend:
    name = "qemu"

    def __init__(self, alive: bool) -> None:
        self.alive = alive

    def is_alive(self, handles: VmHandles) -> bool:
        return self.alive


HANDLES = VmHandles("qemu", 1, "/nonexistent/qmp", "/nonexistent/agent")


def test_rotation_keeps_the_newest_bytes_and_appenders_continue_at_the_start(
        tmp_path: Path) -> None:
    path = tmp_path / "console.log"
    writer = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)  # like QEMU's append=on
    try:
        lines = b"".join(b"line %07d\n" % i for i in range(600_000))  # ~7.2 MiB
        os.write(writer, lines)
        assert not rotate(path, len(lines))  # at the cap: nothing to do
        assert rotate(path, 4 * MIB)
        assert rotated(path).read_bytes() == lines[-4 * MIB:]
        assert path.stat().st_size == 0
        os.write(writer, b"after rotation\n")
        assert path.read_bytes() == b"after rotation\n"  # no hole the size of the old file
    finally:
        os.close(writer)


def test_boot_watchdog_finds_the_marker_after_a_rotation(tmp_path: Path) -> None:
    path = big_console(tmp_path, 5 * MIB)  # earlier boots
    spec = VmSpec("id", "vm1", 1, 512, 1024, tmp_path, BootArtifacts(path, path, path))
    dog = coldboot.Watchdog(cast(Backend, FakeBackend(alive=True)), HANDLES, spec, timeout=60)
    rotate(path, 4 * MIB)
    with open(path, "ab") as f:
        f.write(b"banger-initramfs: loading modules\n")
    dog.started = time.monotonic() - coldboot.EARLY_TIMEOUT - 1
    dog.check()  # an EarlyHang here would retry a boot that was fine
    assert dog.spoke


def test_follower_continues_across_rotations(tmp_path: Path) -> None:
    path = tmp_path / "console.log"
    path.write_bytes(b"first\n")
    follower = Follower(path)
    assert follower.read() == b"first\n"
    with open(path, "ab") as f:
        f.write(b"x" * 100)
    assert follower.read() == b"x" * 100
    rotate(path, 50)
    with open(path, "ab") as f:  # regrows past the follower's old offset before it looks
        f.write(b"y" * 200)
    assert follower.read() == b"y" * 200


def test_vm_logs_prints_the_rotated_part_then_the_live_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    from banger.cli import session
    from banger.cli.vm_cmds import vm_logs

    path = tmp_path / "console.log"
    path.write_bytes(b"old " * 40)
    rotate(path, 100)
    path.write_bytes(b"new\x1b[31m\n")
    monkeypatch.setattr(session, "call", lambda method, params=None: {"path": str(path),
                                                                        "name": "vm1"})
    vm_logs.callback("vm1", False, False, False)  # type: ignore[misc]
    assert capsysbinary.readouterr().out == b"old " * 25 + b"new\x1b[31m\n"  # piped: raw


def test_vm_logs_on_a_terminal_drops_the_guests_escape_sequences(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    import sys

    from banger.cli import session
    from banger.cli.vm_cmds import vm_logs

    path = tmp_path / "console.log"
    path.write_bytes(b"\x1b]0;owned\x07[\x1b[32m  OK  \x1b[0m] up\r\n\x1b[2J")
    monkeypatch.setattr(session, "call", lambda method, params=None: {"path": str(path),
                                                                        "name": "vm1"})
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    vm_logs.callback("vm1", False, False, False)  # type: ignore[misc]
    assert capsysbinary.readouterr().out == b"[  OK  ] up\n"
    vm_logs.callback("vm1", False, True, False)  # type: ignore[misc]  # --raw
    assert capsysbinary.readouterr().out == path.read_bytes()


def test_the_monitor_rotates_live_consoles(tmp_path: Path) -> None:
    from banger.vms import monitor
    from banger.vms.model import VmState

    vm_dir = tmp_path / "vm1"
    vm_dir.mkdir()
    path = big_console(vm_dir, monitor.CONSOLE_CAP + MIB)
    mgr: Any = SimpleNamespace(
        repo=SimpleNamespace(all=lambda: [SimpleNamespace(id="vm1", state=VmState.STARTING)]),
        paths=SimpleNamespace(vm_dir=lambda vm_id: tmp_path / vm_id))

    async def run() -> None:
        task = asyncio.ensure_future(monitor.watch(mgr, interval=0.01))
        try:
            for _ in range(500):
                if rotated(path).exists():
                    return
                await asyncio.sleep(0.01)
        finally:
            task.cancel()

    asyncio.run(run())
    assert path.stat().st_size == 0
    assert rotated(path).stat().st_size == monitor.CONSOLE_CAP
    assert rotated(path).read_bytes().endswith(b"reboot: Power down\n")


def test_event_messages_are_stored_clean(tmp_path: Path) -> None:
    events.record(tmp_path, "restore failed (" + HOSTILE_LINE.decode() + "): booting cold")
    (message,) = [e["message"] for e in events.recent(tmp_path)]
    assert "\x1b" not in message and "\n" not in message and "[red]Y" in message


@pytest.mark.fuzz
@given(st.lists(st.one_of(st.binary(min_size=1, max_size=40), st.none()), max_size=30))
def test_fuzz_rotation_loses_nothing_a_follower_read_and_stays_bounded(
        steps: list[bytes | None]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "console.log"
        path.touch()
        follower, seen, written = Follower(path), b"", b""
        for step in steps:
            if step is None:  # the monitor's turn
                seen += follower.read()
                rotate(path, 64)
                assert path.stat().st_size <= 64  # the cap holds after every check
            else:
                with open(path, "ab") as f:
                    f.write(step)
                written += step
            assert not rotated(path).exists() or rotated(path).stat().st_size <= 64
        seen += follower.read()
        assert seen == written


def test_last_error_is_stored_as_one_clean_line(tmp_path: Path) -> None:
    from banger.store import Store
    from banger.store.db import utcnow
    from banger.vms.model import VmRecord, VmState
    from banger.vms.repo import VmRepo

    store = Store(tmp_path / "b.db")
    store.migrate()
    repo = VmRepo(store)
    repo.insert(VmRecord("id1", "vm1", VmState.RUNNING, "img", "k", 1, 512, 1024, utcnow(),
                         utcnow()))
    repo.set_state("id1", VmState.ERROR, error="agent said: " + HOSTILE_LINE.decode() * 3)
    stored = repo.find("id1").last_error or ""
    assert "\x1b" not in stored and "\n" not in stored and "\u009b" not in stored
    assert stored.startswith("agent said: ]0;X[red]Y")
