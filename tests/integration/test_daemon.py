"""The CLI -> daemon spine with real processes: autostart, crashes, concurrency, the wire."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import time
from pathlib import Path
from typing import Any

from banger.rpc.methods.testing import SWITCH
from tests.conftest import Banger
from tests.polling import process_runs, wait_until


def rpc(sock_path: Path, message: dict[str, Any] | bytes) -> list[dict[str, Any]]:
    """Send one raw request and collect every reply line."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(sock_path))
        s.sendall(message if isinstance(message, bytes) else json.dumps(message).encode() + b"\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            if (data.endswith(b"\n") and b'"type":"result"' in data) or b'"type":"error"' in data:
                break
    return [json.loads(line) for line in data.splitlines() if line]


def start_with_test_methods(banger: Banger) -> None:
    """A daemon that also serves debug.sleep (see banger.rpc.methods.testing)."""
    banger.env[SWITCH] = "1"
    banger.run("daemon", "start", check=True)


def test_cli_autostarts_daemon_and_pings(banger: Banger) -> None:
    assert not banger.socket.exists()
    res = banger.run("vm", "list", "--json", check=True)
    assert json.loads(res.stdout) == []
    st = json.loads(banger.run("daemon", "status", "--json", check=True).stdout)
    assert st["running"] and st["pid"] == banger.daemon_pid()
    assert stat.S_IMODE(banger.socket.stat().st_mode) == 0o600
    assert stat.S_IMODE(banger.socket.parent.stat().st_mode) == 0o700


def test_kill_9_then_next_call_starts_a_new_daemon(banger: Banger) -> None:
    banger.run("daemon", "start", check=True)
    first = banger.daemon_pid()
    assert first
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: not process_runs(first), "the killed daemon to be gone")
    assert banger.socket.exists()  # stale socket left behind by the killed daemon
    res = banger.run("vm", "list", "--json", check=True)
    assert json.loads(res.stdout) == []
    second = banger.daemon_pid()
    assert second and second != first


def test_two_clis_at_once_share_one_daemon(banger: Banger) -> None:
    procs = [banger.popen("vm", "list", "--json") for _ in range(4)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert all(json.loads(o) == [] for o, _ in outs)
    pids = {line.split("pid ")[1].split(")")[0] for line in banger.log.read_text().splitlines()
            if "listening on" in line}
    assert len(pids) == 1


def test_wire_errors_have_codes(banger: Banger) -> None:
    start_with_test_methods(banger)
    [bad] = rpc(banger.socket, {"v": 99, "method": "ping", "params": {}, "op_id": "op-0000abcd"})
    assert bad["type"] == "error" and bad["error"]["code"] == "bad_version"
    assert bad["op_id"] == "op-0000abcd"
    [unknown] = rpc(banger.socket, {"v": 2, "method": "vm.frobnicate", "params": {}})
    assert unknown["error"]["code"] == "unknown_method"
    assert unknown["op_id"].startswith("op-")
    [invalid] = rpc(banger.socket, {"v": 2, "method": "debug.sleep", "params": {"seconds": "x"}})
    assert invalid["error"]["code"] == "invalid_argument"
    [garbage] = rpc(banger.socket, b"this is not json\n")
    assert garbage["error"]["code"] == "invalid_argument"
    [ok] = rpc(banger.socket, {"v": 2, "method": "ping", "params": {}})
    assert ok["type"] == "result" and ok["result"]["pong"] == "ok"


def test_a_normal_daemon_has_no_test_methods(banger: Banger) -> None:
    banger.run("daemon", "start", check=True)
    for name in ("debug.sleep", "workspace.put_tar"):
        [reply] = rpc(banger.socket, {"v": 2, "method": name, "params": {}})
        assert reply["error"]["code"] == "unknown_method", reply


def test_progress_streams_and_disconnect_cancels(banger: Banger) -> None:
    start_with_test_methods(banger)
    replies = rpc(banger.socket, {"v": 2, "method": "debug.sleep",
                                  "params": {"seconds": 0.8, "steps": 4}, "op_id": "op-00000001"})
    stages = [r for r in replies if r["type"] == "progress"]
    assert len(stages) == 5 and replies[-1]["type"] == "result"
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(banger.socket))
        s.sendall(json.dumps({"v": 2, "method": "debug.sleep", "params": {"seconds": 30},
                              "op_id": "op-00000002"}).encode() + b"\n")
        assert b"progress" in s.recv(4096)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if "op-00000002" in banger.log.read_text() and "cancelled" in banger.log.read_text():
            break
        time.sleep(0.05)
    log = banger.log.read_text()
    assert "[op-00000002] banger.rpc: debug.sleep: operation cancelled" in log
    assert "[op-00000001] banger.rpc: debug.sleep done" in log


def test_cancel_message_cancels(banger: Banger) -> None:
    start_with_test_methods(banger)
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(banger.socket))
        s.sendall(json.dumps({"v": 2, "method": "debug.sleep", "params": {"seconds": 30}}).encode()
                  + b"\n")
        f = s.makefile("rb")
        assert json.loads(f.readline())["type"] == "progress"
        s.sendall(b'{"type":"cancel"}\n')
        last = json.loads(f.readline())
        while last["type"] == "progress":
            last = json.loads(f.readline())
    assert last["type"] == "error" and last["error"]["code"] == "cancelled"


def test_sigterm_shuts_down_cleanly(banger: Banger) -> None:
    banger.run("daemon", "start", check=True)
    pid = banger.daemon_pid()
    assert pid
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        if not banger.socket.exists():
            break
        time.sleep(0.05)
    assert not banger.socket.exists()
    assert "shutting down" in banger.log.read_text()
    assert banger.run("daemon", "status").stdout.startswith("daemon: not running")


def test_daemon_stop_and_status(banger: Banger) -> None:
    assert "not running" in banger.run("daemon", "status", check=True).stdout
    banger.run("daemon", "start", check=True)
    assert "daemon stopped" in banger.run("daemon", "stop", check=True).stdout
    assert "not running" in banger.run("daemon", "stop", check=True).stdout


def test_errors_are_one_line_with_op_id_and_exit_1(banger: Banger) -> None:
    banger.home.joinpath("config").mkdir(parents=True)
    banger.home.joinpath("config", "config.toml").write_text('[vm_defaults]\nmem = "1G"\n')
    res = banger.run("vm", "list")
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "config.toml" in lines[0] and "vm_defaults.mem" in lines[0]


def test_usage_error_exits_2(banger: Banger) -> None:
    res = banger.run("vm", "list", "--bogus")
    assert res.returncode == 2
    assert "No such option" in res.stderr


def test_version(banger: Banger) -> None:
    one = banger.run("--version", check=True).stdout.strip()
    assert one.startswith("banger v") and "commit" in one and "built" in one
    info = json.loads(banger.run("version", "--json", check=True).stdout)
    assert set(info) == {"version", "commit", "built"}


def test_completion_script(banger: Banger) -> None:
    out = banger.run("completion", "bash", check=True).stdout
    assert "_BANGER_COMPLETE" in out


def test_doctor_json_works_without_daemon(banger: Banger) -> None:
    res = banger.run("doctor", "--json")
    rows = json.loads(res.stdout)
    names = {r["name"] for r in rows}
    assert {"architecture", "kvm", "qemu-system-x86_64", "e2fsprogs", "debian mirror",
            "vm defaults", "daemon", "disk", "config"} <= names
    assert all(r["status"] in ("PASS", "WARN", "FAIL") for r in rows)
    assert all(r["fix"] for r in rows if r["status"] != "PASS")
    kvm = next(r for r in rows if r["name"] == "kvm")
    if Path("/sys/module/kvm_pvm").exists():
        assert kvm["status"] == "WARN" and "TCG will be used" in kvm["detail"]
    assert not banger.socket.exists()  # doctor never starts the daemon


def test_daemon_ops_lists_long_operations_newest_first(banger: Banger) -> None:
    start_with_test_methods(banger)
    rpc(banger.socket, {"v": 2, "method": "debug.sleep", "params": {"seconds": 0.1, "steps": 1},
                        "op_id": "op-0000000a"})
    [failed] = rpc(banger.socket, {"v": 2, "method": "vm.start", "params": {"vm": "nope"},
                                   "op_id": "op-0000000b"})
    assert failed["error"]["code"] == "not_found"
    rpc(banger.socket, {"v": 2, "method": "vm.list", "params": {}})  # not long: not kept
    ops = json.loads(banger.run("daemon", "ops", "--json", check=True).stdout)
    assert [(o["id"], o["method"], o["state"]) for o in ops] == [
        ("op-0000000b", "vm.start", "failed"), ("op-0000000a", "debug.sleep", "done")]
    assert "no VM named 'nope'" in ops[0]["error"]
    table = banger.run("daemon", "ops", "--limit", "1", check=True).stdout.splitlines()
    assert table[0].split() == ["ID", "METHOD", "STATE", "STARTED", "DURATION", "ERROR"]
    assert len(table) == 2 and table[1].startswith("op-0000000b  vm.start  failed")
    assert banger.run("daemon", "ops", "--limit", "0").returncode == 2


def test_autostart_never_imports_the_callers_directory(banger: Banger, tmp_path: Path) -> None:
    """A hostile repo's own banger/ package must not run as the daemon when a command in that
    repo starts it (`python -m` puts the working directory first on sys.path)."""
    import subprocess

    from tests.conftest import BIN

    repo = tmp_path / "repo"
    (repo / "banger" / "daemon").mkdir(parents=True)
    marker = tmp_path / "pwned"
    payload = f"open({str(marker)!r}, 'w').close()\n"
    for init in (repo / "banger" / "__init__.py", repo / "banger" / "daemon" / "__init__.py",
                 repo / "banger" / "daemon" / "__main__.py"):
        init.write_text(payload)
    res = subprocess.run([str(BIN / "banger"), "vm", "list"], cwd=repo, env=banger.env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert not marker.exists()
