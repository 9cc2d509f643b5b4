"""Real VMs under QEMU/TCG: lifecycle, exec, exit codes, stdin, PTY, crashes, concurrency."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BIN, Banger
from tests.polling import process_runs, wait_until
from tests.vmtest import SLIM, vm_home, vm_lock

pytestmark = [pytest.mark.vm, pytest.mark.network]


@pytest.fixture(scope="module")
def vb() -> Iterator[Banger]:
    with vm_lock(), vm_home(SLIM) as b:
        yield b


def wait_state(b: Banger, name: str, states: set[str], timeout: float = 30) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        info = b.show(name)
        if info["state"] in states or time.monotonic() > deadline:
            return info
        time.sleep(0.2)


def test_lifecycle_persists_disk_across_stop_start(vb: Banger) -> None:
    vb.run("vm", "create", "--name", "life", check=True)
    assert vb.show("life")["state"] == "running"
    res = vb.run("vm", "exec", "life", "--", "sh", "-c", "echo kept > /root/marker && sync && hostname")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "life"
    assert "stopped" in vb.run("vm", "stop", "life", check=True).stdout
    res = vb.run("vm", "exec", "life", "--", "true")
    assert res.returncode == 1 and "is stopped" in res.stderr and "banger vm start life" in res.stderr
    vb.run("vm", "start", "life", check=True)
    assert vb.run("vm", "exec", "life", "--", "cat", "/root/marker", check=True).stdout == "kept\n"
    listed = json.loads(vb.run("vm", "list", "--json", check=True).stdout)
    row = next(v for v in listed if v["name"] == "life")
    assert row["state"] == "running" and row["vcpu"] == 1 and row["memory_mib"] == 1024
    vb.run("vm", "logs", "life", check=True)  # after a restore the console may hold nothing
    res = vb.run("vm", "delete", "life")
    assert res.returncode == 1 and "delete -f" in res.stderr
    vb.run("vm", "delete", "-f", "life", check=True)
    assert vb.run("vm", "show", "life").returncode == 1


def test_run_passes_exit_code(vb: Banger) -> None:
    res = vb.run("vm", "run", "--rm", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert res.returncode == 3
    assert res.stdout == "out\n"
    assert "err" in res.stderr
    assert "spec: 1 vcpu · 1024 MiB · 4G disk · debian-bookworm-slim" in res.stderr
    assert json.loads(vb.run("vm", "list", "--json", check=True).stdout) == []


def test_run_forwards_stdin(vb: Banger) -> None:
    res = vb.run("vm", "run", "--rm", "--", "cat", input="hi\n")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "hi\n"


def test_run_keeps_vm_without_rm_and_detach(vb: Banger) -> None:
    res = vb.run("vm", "run", "--name", "keeper", "--", "true")
    assert res.returncode == 0
    assert "keeper keeps running" in res.stderr and "banger vm stop keeper" in res.stderr
    res = vb.run("vm", "run", "-d", "--name", "detached")
    assert res.returncode == 0 and "banger vm shell detached" in res.stdout
    assert vb.show("detached")["state"] == "running"
    res = vb.run("vm", "ssh", "detached", "--", "true")  # the slim image has no sshd
    assert res.returncode != 0 and "has no ssh server; use `banger vm shell detached`" in res.stderr
    res = vb.run("vm", "delete", "-f", "keeper", "nope", "detached")  # one bad name stops nothing
    assert res.returncode != 0
    assert res.stdout == "deleted keeper\ndeleted detached\n"
    assert "no VM" in res.stderr and "nope" in res.stderr
    assert json.loads(vb.run("vm", "list", "--json", check=True).stdout) == []


def test_pty_shell_sees_term_and_resize(vb: Banger) -> None:
    pexpect = pytest.importorskip("pexpect")
    vb.run("vm", "create", "--name", "tty", check=True)
    child = pexpect.spawn(str(BIN / "banger"), ["vm", "shell", "tty"], env={**vb.env, "TERM": "xterm"},
                          encoding="utf-8", timeout=30, dimensions=(30, 100))
    try:
        child.sendline("echo TERM=$TERM; stty size")
        child.expect(r"TERM=xterm\r\n")
        child.expect(r"30 100")
        child.setwinsize(40, 120)
        deadline = time.monotonic() + 10  # the resize travels to the guest on its own
        child.sendline("stty size")
        while child.expect([r"40 120", r"30 100"]) != 0:
            assert time.monotonic() < deadline, "the guest never saw the new window size"
            child.sendline("stty size")
        child.sendline("sleep 30")
        wait_until(lambda: vb.run("vm", "exec", "tty", "--", "sh", "-c",
                                  "grep -qx sleep /proc/[0-9]*/comm").returncode == 0,
                   "sleep to run in the guest")
        child.sendcontrol("c")  # Ctrl-C reaches the guest, not banger
        child.sendline("echo alive-$((6*7))")
        child.expect("alive-42")
        child.sendline("exit 7")
        child.expect(pexpect.EOF)
    finally:
        child.close()
        vb.run("vm", "delete", "-f", "tty")
    assert child.exitstatus == 7


def test_daemon_kill_9_readopts_running_vm(vb: Banger) -> None:
    vb.run("vm", "create", "--name", "adopt", check=True)
    pid = vb.daemon_pid()
    assert pid
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not process_runs(pid), "the killed daemon to be gone")
    res = vb.run("vm", "exec", "adopt", "--", "echo", "still-here")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "still-here\n"
    assert vb.daemon_pid() != pid
    assert vb.show("adopt")["state"] == "running"
    vb.run("vm", "delete", "-f", "adopt", check=True)


def test_qemu_kill_9_marks_vm_error(vb: Banger) -> None:
    vb.run("vm", "create", "--name", "doomed", check=True)
    info = vb.show("doomed")
    handles = json.loads((Path(str(info["dir"])) / "handles.json").read_text())
    os.kill(handles["pid"], signal.SIGKILL)
    info = wait_state(vb, "doomed", {"error", "stopped"})
    assert info["state"] == "error"
    assert "exited unexpectedly" in str(info["last_error"])
    res = vb.run("vm", "exec", "doomed", "--", "true")
    assert res.returncode == 1 and "not_running" not in res.stderr and "is error" in res.stderr
    vb.run("vm", "start", "doomed", check=True)  # an errored VM starts again from its disk
    assert vb.run("vm", "exec", "doomed", "--", "true").returncode == 0
    vb.run("vm", "delete", "-f", "doomed", check=True)


def test_three_concurrent_creates_all_run(vb: Banger) -> None:
    procs = [vb.popen("vm", "create", "--name", f"par{i}", "--memory", "512M") for i in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    states = {v["name"]: v["state"] for v in json.loads(vb.run("vm", "list", "--json").stdout)}
    assert all(states[f"par{i}"] == "running" for i in range(3)), states
    for i in range(3):
        vb.run("vm", "delete", "-f", f"par{i}", check=True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "Bad_Name"], "invalid VM name"),
        (["--name", "-dash"], "invalid VM name"),
        (["--vcpu", "0"], "--vcpu"),
        (["--memory", "0"], "memory"),
        (["--memory", "100T"], "invalid memory"),
        (["--disk", "12Q"], "--disk"),
        (["--image", "no-such-image"], "unknown image 'no-such-image'"),
        (["--kernel", "no-such-kernel"], "no kernel 'no-such-kernel'"),
    ],
)
def test_bad_create_input_is_one_clear_line(vb: Banger, args: list[str], message: str) -> None:
    res = vb.run("vm", "create", *args)
    assert res.returncode in (1, 2)
    assert message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not [v for v in json.loads(vb.run("vm", "list", "--json").stdout)
                if v["state"] != "running"]


def test_duplicate_name_is_refused(vb: Banger) -> None:
    vb.run("vm", "create", "--name", "twin", "--no-start", check=True)
    res = vb.run("vm", "create", "--name", "twin", "--no-start")
    assert res.returncode == 1 and "already exists" in res.stderr
    vb.run("vm", "delete", "twin", check=True)


def test_set_changes_shape_when_stopped(vb: Banger) -> None:
    vb.run("vm", "create", "--name", "shape", "--no-start", check=True)
    res = vb.run("vm", "set", "shape", "--vcpu", "2", "--memory", "768M", "--disk", "6G", check=True)
    assert "2 vcpu · 768 MiB · 6G disk" in res.stdout
    vb.run("vm", "start", "shape", check=True)
    out = vb.run("vm", "exec", "shape", "--", "sh", "-c", "nproc; df -m / | tail -1", check=True).stdout
    nproc, df = out.splitlines()
    assert nproc == "2"
    assert int(df.split()[1]) > 5000  # the root filesystem grew to the disk on first boot
    res = vb.run("vm", "set", "shape", "--vcpu", "1")
    assert res.returncode == 1 and "stop it" in res.stderr
    vb.run("vm", "delete", "-f", "shape", check=True)


def test_no_leftover_qemu(vb: Banger) -> None:
    out = subprocess.run(["pgrep", "-af", f"{vb.home}/state/vms/"], capture_output=True, text=True)
    assert out.stdout == "", out.stdout
    print(sys.version)
