"""Item 5 of the hostile-guest issue, local side: the CLI only talks to a daemon of its own user.

Another local user can pre-create the socket dir (the /tmp fallback when XDG_RUNTIME_DIR is
unset) and serve a fake daemon there, which would then receive `vm exec` argv, env and keys.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import Banger
from tests.sockettrust import NOBODY, SYSTEM_PYTHON, FakeDaemon, can_switch_users

pytestmark = pytest.mark.skipif(can_switch_users() is not None, reason=str(can_switch_users()))


def one_error_line(res: subprocess.CompletedProcess[str]) -> str:
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and len(lines) == 1, res.stderr
    return lines[0]


def test_cli_refuses_a_socket_dir_owned_by_another_user(banger: Banger) -> None:
    run_dir = banger.home / "run"
    run_dir.mkdir(mode=0o700)
    fake = FakeDaemon(banger.socket)
    os.chown(run_dir, NOBODY, NOBODY)
    res = banger.run("vm", "exec", "box", "--", "echo", "secret", timeout=30)
    assert fake.report() == "connections 0 bytes 0"
    line = one_error_line(res)
    assert f"the daemon socket dir {run_dir} is owned by uid {NOBODY}, not you" in line
    assert "remove it" in line


def test_cli_refuses_a_symlinked_socket_dir(banger: Banger, tmp_path: Path) -> None:
    elsewhere = Path(tempfile.mkdtemp(dir="/tmp"))
    (banger.home / "run").symlink_to(elsewhere)
    fake = FakeDaemon(elsewhere / "bangerd.sock")
    try:
        res = banger.run("vm", "list", timeout=30)
        assert fake.report() == "connections 0 bytes 0"
    finally:
        (elsewhere / "bangerd.sock").unlink(missing_ok=True)
        elsewhere.rmdir()
    assert "is a symlink" in one_error_line(res)


def test_cli_refuses_a_socket_owned_by_another_user(banger: Banger) -> None:
    (banger.home / "run").mkdir(mode=0o700)
    fake = FakeDaemon(banger.socket)
    os.chown(banger.socket, NOBODY, NOBODY, follow_symlinks=False)
    res = banger.run("vm", "list", timeout=30)
    assert fake.report() == "connections 0 bytes 0"
    assert f"{banger.socket} is owned by uid {NOBODY}, not you" in one_error_line(res)


def test_cli_refuses_a_daemon_running_as_another_user(banger: Banger) -> None:
    """Right dir, right socket owner, wrong process behind it: SO_PEERCRED says who listens."""
    (banger.home / "run").mkdir(mode=0o700)
    staging = Path(tempfile.mkdtemp(dir="/tmp"))
    os.chown(staging, NOBODY, NOBODY)
    fake = FakeDaemon(staging / "s.sock", uid=NOBODY)
    os.rename(staging / "s.sock", banger.socket)  # a bound socket keeps working under a new name
    os.chown(banger.socket, 0, 0)
    staging.rmdir()
    res = banger.run("vm", "exec", "box", "--", "echo", "secret", timeout=30)
    assert fake.report() == "connections 1 bytes 0"
    assert f"runs as uid {NOBODY}, not you" in one_error_line(res)


NOBODY_PING = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("permission denied"); sys.exit()
s.settimeout(20)
try:  # the daemon may close before, while or after the request is sent
    s.sendall(json.dumps({"v": 2, "method": "ping", "params": {}}).encode() + b"\\n")
    reply = s.recv(65536)
except (BrokenPipeError, ConnectionResetError):
    reply = b""
print(f"reply {reply!r}" if reply else "closed without a reply")
"""


def ping_as_nobody(sock: Path) -> str:
    res = subprocess.run([str(SYSTEM_PYTHON), "-c", NOBODY_PING, str(sock)], user=NOBODY,
                         group=NOBODY, extra_groups=[], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_other_users_cannot_use_the_daemon(banger: Banger) -> None:
    banger.run("daemon", "start", check=True)
    assert ping_as_nobody(banger.socket) == "permission denied"  # the 0700 dir keeps them out
    # Even with the socket exposed (a careless chmod), the daemon drops other uids on accept.
    for path in (banger.home, banger.home / "run"):
        path.chmod(0o711)
    banger.socket.chmod(0o666)
    assert ping_as_nobody(banger.socket) == "closed without a reply"
    assert f"refused a connection from uid {NOBODY}" in banger.log.read_text()
    with socket.socket(socket.AF_UNIX) as s:  # its own user is still served
        s.connect(str(banger.socket))
        s.sendall(b'{"v":2,"method":"ping","params":{}}\n')
        assert b'"pong":"ok"' in s.makefile("rb").readline()
