"""SO_PEERCRED on both ends of the daemon socket: neither side talks to another user's process."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from banger.daemon.server import handle_connection
from banger.errors import Conflict
from banger.paths import check_private_dir
from banger.rpc import peer
from tests.sockettrust import NOBODY, SYSTEM_PYTHON, can_switch_users


def test_peer_uid_is_the_connecting_process_uid() -> None:
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        assert peer.peer_uid(a) == os.geteuid()


def test_client_refuses_a_daemon_of_another_uid(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = socket.socketpair(socket.AF_UNIX)
    monkeypatch.setattr(os, "geteuid", lambda: os.getuid() + 4242)
    with a, b, pytest.raises(Conflict, match=f"runs as uid {os.getuid()}, not you"):
        peer.check_daemon_peer(a, Path("/run/x/bangerd.sock"))


def test_socket_file_must_be_a_socket(tmp_path: Path) -> None:
    (tmp_path / "bangerd.sock").write_text("")
    with pytest.raises(Conflict, match="is not a socket"):
        peer.check_socket_file(tmp_path / "bangerd.sock")
    with pytest.raises(FileNotFoundError):  # absent: the CLI starts a daemon
        peer.check_socket_file(tmp_path / "missing.sock")


def test_socket_dir_of_ours_is_made_0700(tmp_path: Path) -> None:
    d = tmp_path / "run"
    d.mkdir(mode=0o777)
    d.chmod(0o777)
    check_private_dir(d)
    assert d.stat().st_mode & 0o777 == 0o700


NOBODY_PING = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.settimeout(20)
try:  # the daemon may close before, while or after the request is sent
    s.sendall(b'{"v":2,"method":"ping","params":{}}\\n')
    print(repr(s.recv(65536)))
except (BrokenPipeError, ConnectionResetError):
    print(repr(b""))
"""


@pytest.mark.skipif(can_switch_users() is not None, reason=str(can_switch_users()))
def test_daemon_drops_a_connection_from_another_uid(caplog: pytest.LogCaptureFixture) -> None:
    import banger.daemon.handlers.system  # noqa: F401 - registers ping

    sock_dir = Path(tempfile.mkdtemp(dir="/tmp"))
    sock_dir.chmod(0o711)
    path = sock_dir / "d.sock"

    async def scenario() -> str:
        daemon: Any = object()  # never reached: the peer is dropped before the request is read
        server = await asyncio.start_unix_server(lambda r, w: handle_connection(daemon, r, w),
                                                 path=str(path))
        path.chmod(0o666)
        async with server:
            proc = await asyncio.create_subprocess_exec(
                str(SYSTEM_PYTHON), "-c", NOBODY_PING, str(path), user=NOBODY, group=NOBODY,
                extra_groups=[], stdout=subprocess.PIPE)
            out, _ = await asyncio.wait_for(proc.communicate(), 30)
        return out.decode().strip()

    try:
        assert asyncio.run(scenario()) == "b''"
    finally:
        path.unlink(missing_ok=True)
        sock_dir.rmdir()
    assert f"refused a connection from uid {NOBODY}" in caplog.text


def test_doctor_names_a_socket_dir_that_is_not_ours(tmp_path: Path) -> None:
    from banger.config import load_config
    from banger.doctor.state_checks import daemon
    from banger.paths import resolve_paths

    paths = resolve_paths({"BANGER_HOME": str(tmp_path)})
    (tmp_path / "elsewhere").mkdir()
    paths.runtime_dir.symlink_to(tmp_path / "elsewhere")
    [check] = daemon(paths, load_config(paths))
    assert check.status == "FAIL" and f"{paths.runtime_dir} is a symlink" in check.detail
