"""Guest-owned sessions on a real VM: they outlive the CLI and a daemon kill -9 with gapless logs,
record exit codes and signals, hold their log cap, take input (`send`, `attach`) and survive
`vm stop --save` / `vm start`. One VM serves the whole module."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BIN, Banger
from tests.polling import process_runs, wait_until
from tests.vmtest import SLIM, vm_home, vm_lock

pytestmark = [pytest.mark.vm, pytest.mark.network, pytest.mark.timeout(900)]

VM = "sess"
TICK = "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.2; done"


@pytest.fixture(scope="module")
def b() -> Iterator[Banger]:
    with vm_lock(), vm_home(SLIM) as banger:
        banger.run("vm", "create", "--name", VM, check=True, timeout=600)
        yield banger


def show(b: Banger, name: str) -> dict[str, Any]:
    return dict(json.loads(b.run("vm", "session", "show", VM, name, "--json", check=True,
                                 timeout=60).stdout))


def logs(b: Banger, name: str, *extra: str) -> str:
    return b.run("vm", "session", "logs", VM, name, *extra, check=True, timeout=60).stdout


def ticks(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"tick (\d+)\n", text)]


def wait_ticks(b: Banger, name: str, more_than: int) -> list[int]:
    found: list[int] = []

    def enough() -> bool:
        nonlocal found
        found = ticks(logs(b, name))
        return bool(found) and found[-1] > more_than

    wait_until(enough, f"{name} to tick past {more_than}", timeout=60, interval=0.3)
    return found


def test_a_session_survives_a_daemon_kill_9_with_a_gapless_log(b: Banger) -> None:
    started = b.run("vm", "session", "start", VM, "--name", "ticker", "--", "sh", "-c", TICK,
                    check=True, timeout=60)
    assert started.stdout.strip() == "ticker"
    before = wait_ticks(b, "ticker", 3)
    pid = b.daemon_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not process_runs(pid), "the killed daemon to be gone")
    info = show(b, "ticker")  # starts a new daemon, which re-adopts the VM
    assert b.daemon_pid() != pid
    assert info["state"] == "running" and info["pid"] and info["argv"][0] == "sh"
    after = wait_ticks(b, "ticker", before[-1] + 5)
    assert after == list(range(len(after)))  # nothing lost while no daemon was there
    listed = json.loads(b.run("vm", "session", "list", "--json", check=True).stdout)
    assert [(s["vm"], s["name"], s["state"]) for s in listed] == [(VM, "ticker", "running")]
    assert logs(b, "ticker", "--tail", "3").count("\n") == 3
    killed = b.run("vm", "session", "kill", VM, "ticker", check=True, timeout=60)
    assert "signal 9" in killed.stdout
    info = show(b, "ticker")
    assert (info["state"], info["signal"], info["exit_code"]) == ("exited", 9, None)
    assert info["ended"] >= info["started"]
    b.run("vm", "session", "rm", VM, "ticker", check=True)


def test_exit_code_stop_rm_and_the_log_cap(b: Banger) -> None:
    b.run("vm", "session", "start", VM, "--name", "three", "--", "sh", "-c", "echo bye; exit 3",
          check=True)
    wait_until(lambda: show(b, "three")["state"] == "exited", "three to exit", timeout=60,
               interval=0.3)
    assert show(b, "three")["exit_code"] == 3 and logs(b, "three") == "bye\n"
    assert "exited (3)" in b.run("vm", "session", "show", VM, "three", check=True).stdout

    script = "i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); done; sleep 600"
    b.run("vm", "session", "start", VM, "--name", "big", "--log-cap", "4K", "--", "sh", "-c",
          script, check=True)
    wait_until(lambda: "line 1999\n" in logs(b, "big"), "big to write its lines", timeout=120,
               interval=0.5)
    info = show(b, "big")
    assert info["log_end"] > 15000 and info["log_end"] - info["log_start"] <= 4096
    assert len(logs(b, "big").encode()) <= 4096
    refused = b.run("vm", "session", "rm", VM, "big")
    assert refused.returncode == 1 and "running" in refused.stderr
    stopped = b.run("vm", "session", "stop", VM, "big", "--grace", "5", check=True, timeout=60)
    assert "signal 15" in stopped.stdout
    for name in ("three", "big"):
        b.run("vm", "session", "rm", VM, name, check=True)
    assert json.loads(b.run("vm", "session", "list", VM, "--json", check=True).stdout) == []


def test_send_reaches_a_cat_session(b: Banger) -> None:
    b.run("vm", "session", "start", VM, "--name", "cat", "--", "cat", check=True)
    b.run("vm", "session", "send", VM, "cat", "hello cat", check=True)
    b.run("vm", "session", "send", VM, "cat", "--file", "-", input="from stdin\n", check=True)
    wait_until(lambda: logs(b, "cat") == "hello cat\nfrom stdin\n", "cat to echo both",
               timeout=60, interval=0.3)
    b.run("vm", "session", "send", VM, "cat", "--eof", "-n", "", check=True)
    wait_until(lambda: show(b, "cat")["state"] == "exited", "cat to end at EOF", timeout=60,
               interval=0.3)
    assert show(b, "cat")["exit_code"] == 0
    b.run("vm", "session", "rm", VM, "cat", check=True)


def test_attach_types_into_a_shell_and_a_second_attach_is_read_only(b: Banger) -> None:
    pexpect = pytest.importorskip("pexpect")
    b.run("vm", "session", "start", VM, "--name", "shell", "--tty", "--", "sh", "-i", check=True)
    env = {**b.env, "TERM": "xterm"}
    first = pexpect.spawn(str(BIN / "banger"), ["vm", "session", "attach", VM, "shell"],
                          env=env, encoding="utf-8", timeout=60, dimensions=(30, 100))
    try:
        first.expect(r"attached; Ctrl-\] detaches")
        first.sendline("echo typed-$((6*7)); stty size")
        first.expect("typed-42")
        first.expect("30 100")
        second = pexpect.spawn(str(BIN / "banger"), ["vm", "session", "attach", VM, "shell"],
                               env=env, encoding="utf-8", timeout=60)
        second.expect("read-only")
        second.sendline("echo from-second")  # dropped: the agent gives it no input
        first.sendline("echo live-$((7*8))")
        second.expect("live-56")  # the read-only attach sees live output
        second.sendcontrol("]")
        second.expect("keeps running")
        second.expect(pexpect.EOF)
        first.sendcontrol("]")
        first.expect("keeps running")
        first.expect(pexpect.EOF)
    finally:
        first.close()
    assert "from-second" not in logs(b, "shell")
    assert show(b, "shell")["state"] == "running"
    again = pexpect.spawn(str(BIN / "banger"), ["vm", "session", "attach", VM, "shell"],
                          env=env, encoding="utf-8", timeout=60)
    try:
        again.expect("attached;")  # the writer's seat was freed by the detach
        again.sendline("exit 5")
        again.expect("exited \\(5\\)")
        again.expect(pexpect.EOF)
    finally:
        again.close()
    assert again.exitstatus == 5
    b.run("vm", "session", "rm", VM, "shell", check=True)


def test_sessions_survive_stop_save_and_start(b: Banger) -> None:
    b.run("vm", "session", "start", VM, "--name", "saved", "--", "sh", "-c", TICK, check=True)
    before = wait_ticks(b, "saved", 2)
    b.run("vm", "stop", "--save", VM, check=True, timeout=300)
    b.run("vm", "start", VM, check=True, timeout=300)
    assert show(b, "saved")["state"] == "running"
    after = wait_ticks(b, "saved", before[-1] + 3)
    assert after == list(range(len(after)))
    b.run("vm", "session", "rm", "-f", VM, "saved", check=True)


def test_a_cold_reboot_marks_a_session_exited_and_keeps_its_log(b: Banger) -> None:
    b.run("vm", "session", "start", VM, "--name", "cold", "--", "sh", "-c", "echo before; sleep 600",
          check=True)
    wait_until(lambda: logs(b, "cold") == "before\n", "the session's first line", timeout=60,
               interval=0.3)
    b.run("vm", "stop", VM, check=True, timeout=300)
    b.run("vm", "start", VM, check=True, timeout=300)
    info = show(b, "cold")
    assert (info["state"], info["lost"], info["exit_code"]) == ("exited", True, None), info
    assert logs(b, "cold") == "before\n"
    b.run("vm", "session", "rm", VM, "cold", check=True)


def test_vm_run_detached_starts_the_command_as_a_session_listed_by_vm_show(b: Banger) -> None:
    res = b.run("vm", "run", "-d", "--name", "bg", "--", "sh", "-c", "echo up; sleep 600",
                check=True, timeout=300)
    found = re.search(r"bg runs it as session ([a-z0-9-]+)", res.stdout)
    assert found, res.stdout
    name = found.group(1)
    try:
        wait_until(lambda: b.run("vm", "session", "logs", "bg", name, timeout=60).stdout == "up\n",
                   "the detached command's output", timeout=60, interval=0.3)
        shown = b.show("bg")
        assert [(s["vm"], s["name"], s["state"]) for s in shown["sessions"]] == [
            ("bg", name, "running")]
        assert shown["sessions"][0]["argv"] == ["sh", "-c", "echo up; sleep 600"]
        b.run("vm", "stop", "bg", check=True, timeout=120)
        assert b.show("bg")["sessions"] == []  # a stopped VM runs nothing
    finally:
        b.run("vm", "delete", "-f", "bg", timeout=120)
    assert b.run("vm", "run", "-d", "--rm", "--", "true").returncode == 2


def test_a_detached_session_starts_in_the_shipped_workspace(b: Banger, tmp_path: Path) -> None:
    repo = tmp_path / "proj"
    repo.mkdir()
    for args in (["init", "-q", "-b", "main"], ["-c", "user.email=d@e", "-c", "user.name=D",
                                                "commit", "-q", "--allow-empty", "-m", "x"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)
    res = b.run("vm", "run", "-d", "--name", "wsbg", str(repo), "--", "pwd", check=True,
                timeout=300)
    name = re.search(r"as session ([a-z0-9-]+)", res.stdout)
    assert name, res.stdout
    try:
        wait_until(lambda: b.run("vm", "session", "logs", "wsbg", name.group(1),
                                 timeout=60).stdout == "/root/repo\n",
                   "pwd in the workspace", timeout=60, interval=0.3)
    finally:
        b.run("vm", "delete", "-f", "wsbg", timeout=120)
