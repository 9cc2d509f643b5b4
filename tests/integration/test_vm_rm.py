"""`vm run --rm` belongs to the daemon: the VM goes when its CLI does, however the CLI ends
(SIGKILL, a closed terminal, a daemon restart in between). Real VMs under QEMU."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BIN, Banger
from tests.polling import process_runs, wait_until
from tests.vmtest import SLIM, vm_home, vm_lock

pytestmark = [pytest.mark.vm, pytest.mark.network, pytest.mark.timeout(600)]
STARTED = "touch /root/started; sleep 600"  # the guest command, and how we know it runs


@pytest.fixture(scope="module")
def vb() -> Iterator[Banger]:
    with vm_lock(), vm_home(SLIM) as b:
        yield b


def names(b: Banger) -> list[str]:
    return [v["name"] for v in json.loads(b.run("vm", "list", "--json", check=True).stdout)]


def run_cli(b: Banger, *args: str) -> subprocess.Popen[bytes]:
    """`banger vm run ...` in the background, as a user's shell would start it (no terminal)."""
    return subprocess.Popen([str(BIN / "banger"), "vm", "run", *args], env=b.env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def wait_started(b: Banger, name: str, marker: str = "/root/started") -> int:
    """Until the guest command runs; the VM's QEMU pid."""
    wait_until(lambda: b.run("vm", "exec", name, "--", "test", "-e", marker).returncode == 0,
               f"the command in {name} to start", timeout=300, interval=0.5)
    handles = json.loads((Path(str(b.show(name)["dir"])) / "handles.json").read_text())
    return int(handles["pid"])


def wait_deleted(b: Banger, name: str, qemu: int) -> None:
    wait_until(lambda: name not in names(b), f"{name} to be deleted", timeout=30, interval=0.2)
    wait_until(lambda: not process_runs(qemu), f"{name}'s QEMU to exit", timeout=30)
    assert b.run("vm", "show", name).returncode == 1


def test_sigkill_of_the_cli_deletes_the_vm(vb: Banger) -> None:
    cli = run_cli(vb, "--rm", "--name", "rmkill", "--", "sh", "-c", STARTED)
    try:
        qemu = wait_started(vb, "rmkill")
        cli.kill()  # no `finally` runs in the CLI: the daemon must notice on its own
        cli.wait()
        wait_deleted(vb, "rmkill", qemu)
    finally:
        cli.kill()
        cli.wait()


def test_closing_the_terminal_of_an_rm_shell_deletes_the_vm(vb: Banger) -> None:
    pid, master = pty.fork()
    if pid == 0:  # the child: banger on a new terminal, as a terminal window runs it
        os.execve(str(BIN / "banger"), ["banger", "vm", "run", "--rm", "--name", "rmtty"],
                  {**vb.env, "TERM": "xterm"})
    output = bytearray()
    stop = threading.Event()

    def drain() -> None:  # keep the terminal readable so the CLI never blocks writing to it
        while not stop.is_set():  # a read blocked in another thread would keep the tty open
            if select.select([master], [], [], 0.1)[0]:
                try:
                    output.extend(os.read(master, 4096))
                except OSError:
                    return

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    status: list[int] = []

    def exited() -> bool:
        done, code = os.waitpid(pid, os.WNOHANG)
        if done:
            status.append(code)
        return bool(status)

    try:
        wait_until(lambda: "rmtty" in names(vb) and vb.show("rmtty")["state"] == "running",
                   "the VM to run", timeout=300, interval=0.5)
        # typeahead waits in the terminal until the guest shell reads it
        os.write(master, b"touch /root/attached\n")
        qemu = wait_started(vb, "rmtty", "/root/attached")
        stop.set()
        reader.join()
        os.close(master)  # the terminal window closes: the kernel sends SIGHUP
        wait_until(exited, "the CLI to end", timeout=30)
        assert os.WIFSIGNALED(status[0]) and os.WTERMSIG(status[0]) == signal.SIGHUP, (
            status, output[-500:])
        wait_deleted(vb, "rmtty", qemu)
    finally:
        if not stop.is_set():
            stop.set()
            reader.join()
            os.close(master)
        if not status:
            with_pid_gone(pid)


def with_pid_gone(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def test_without_rm_a_killed_cli_leaves_the_vm_running_and_says_so(vb: Banger) -> None:
    cli = run_cli(vb, "--name", "rmkeep", "--", "sh", "-c", STARTED)
    try:
        wait_started(vb, "rmkeep")
        cli.kill()
        cli.wait()
        wanted = "client went away during `vm exec`; its command was killed; the VM keeps running"
        wait_until(lambda: wanted in [e["message"] for e in vb.show("rmkeep")["events"]],
                   "the event in `vm show`", timeout=30, interval=0.2)
        assert vb.show("rmkeep")["state"] == "running"
        assert "rmkeep" in names(vb)
    finally:
        cli.kill()
        cli.wait()
        vb.run("vm", "delete", "-f", "rmkeep")


def test_a_vm_whose_cli_died_with_the_daemon_down_is_deleted_at_daemon_start(vb: Banger) -> None:
    cli = run_cli(vb, "--rm", "--name", "rmboot", "--", "sh", "-c", STARTED)
    try:
        qemu = wait_started(vb, "rmboot")
        cli.send_signal(signal.SIGSTOP)  # else the CLI's own delete restarts the daemon first
        daemon = vb.daemon_pid()
        assert daemon
        os.kill(daemon, signal.SIGKILL)
        wait_until(lambda: not process_runs(daemon), "the killed daemon to be gone")
        assert process_runs(qemu)  # the VM outlives its daemon
        cli.kill()
        cli.wait()
        assert "rmboot" not in names(vb)  # this starts the daemon; reconcile ran before it served
        assert vb.daemon_pid() != daemon
        wait_until(lambda: not process_runs(qemu), "rmboot's QEMU to exit", timeout=30)
    finally:
        cli.kill()
        cli.wait()
