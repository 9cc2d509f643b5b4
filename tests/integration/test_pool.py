"""The warm pool on real VMs: a paused clone waits, a `vm run` takes it and gets its own name,
the pool VM is never listed, and `--size 0` leaves no QEMU behind."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Banger
from tests.vmtest import SLIM, vm_home, vm_lock

pytestmark = [pytest.mark.vm]


@pytest.fixture(scope="module")
def pb() -> Iterator[Banger]:
    with vm_lock(), vm_home(SLIM) as b:
        yield b


def pool_rows(b: Banger) -> list[dict[str, object]]:
    return list(json.loads(b.run("vm", "pool", "list", "--json", check=True).stdout))


def wait_ready(b: Banger, n: int, timeout: float = 300.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        rows = pool_rows(b)
        if rows and rows[0]["ready"] == n:
            return rows[0]
        assert time.monotonic() < deadline, f"pool never had {n} ready: {rows}"
        time.sleep(0.2)


def qemus_under(home: Path) -> list[int]:
    """QEMU processes whose command line names this home's VM dirs."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if cmd.startswith(b"qemu-system") and f"{home}/state/vms/".encode() in cmd:
            found.append(int(proc.name))
    return found


class ListWatcher:
    """Runs `vm list --json` in a loop and keeps every name it ever saw."""

    def __init__(self, b: Banger) -> None:
        self.b = b
        self.seen: set[str] = set()
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            out = self.b.run("vm", "list", "--json")
            if out.returncode == 0:
                self.seen |= {vm["name"] for vm in json.loads(out.stdout)}
                self.rounds += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)


def test_pool_hands_a_paused_clone_to_vm_run(pb: Banger) -> None:
    watcher = ListWatcher(pb)
    try:
        out = pb.run("vm", "pool", "set", "--size", "1", check=True, timeout=300)
        assert "1 clone(s)" in out.stdout + out.stderr
        row = wait_ready(pb, 1)
        assert row["image"] == SLIM and row["size"] == 1
        assert 0 < float(str(row["pss_mib"])) < 400  # the paused clone's host memory
        [pooled] = qemus_under(pb.home)
        ran = pb.run("vm", "run", "--rm", "--", "hostname", check=True, timeout=120)
        name = ran.stdout.strip()
        assert name and name != "banger-template"
        assert pooled not in qemus_under(pb.home)  # that VM was the pooled clone (deleted: --rm)
        # a named VM from the pool: its own hostname, and `vm show` says where it came from
        wait_ready(pb, 1)
        pb.run("vm", "create", "--name", "pooled", check=True, timeout=120)
        assert pb.run("vm", "exec", "pooled", "--", "hostname", check=True).stdout.strip() == "pooled"
        events = [e["message"] for e in pb.show("pooled")["events"]]
        assert any(m.startswith("started from the warm pool") for m in events), events
        pb.run("vm", "delete", "-f", "pooled", check=True)
        wait_ready(pb, 1)
    finally:
        watcher.stop()
    assert watcher.rounds > 0
    assert watcher.seen <= {name, "pooled"}  # never a pool VM
    pb.run("vm", "pool", "set", "--size", "0", check=True)
    assert pool_rows(pb) == []
    deadline = time.monotonic() + 30
    while qemus_under(pb.home):
        assert time.monotonic() < deadline, "a pooled QEMU outlived --size 0"
        time.sleep(0.1)


def wait_no_qemu(home: Path) -> None:
    deadline = time.monotonic() + 30
    while qemus_under(home):
        assert time.monotonic() < deadline, f"QEMU left behind: {qemus_under(home)}"
        time.sleep(0.1)


def test_pool_goes_with_the_daemon_and_comes_back(pb: Banger) -> None:
    pb.run("vm", "pool", "set", "--size", "1", check=True, timeout=300)
    wait_ready(pb, 1)
    pb.run("daemon", "stop", check=True, timeout=60)
    wait_no_qemu(pb.home)  # a clean stop takes its clones with it
    first = wait_ready(pb, 1)  # the next command starts a daemon, which refills from the store
    assert first["size"] == 1
    [orphan] = qemus_under(pb.home)
    pid = pb.daemon_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # a crash leaves the clone running ...
    assert orphan in qemus_under(pb.home)
    wait_ready(pb, 1)  # ... and the next daemon reaps it before refilling
    assert orphan not in qemus_under(pb.home)
    assert json.loads(pb.run("vm", "list", "--json", check=True).stdout) == []
    pb.run("vm", "pool", "set", "--size", "0", check=True)
    wait_no_qemu(pb.home)
