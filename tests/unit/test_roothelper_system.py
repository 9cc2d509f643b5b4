"""`banger system`: what needs no root to check (unit files by content, the sudo refusal)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from banger.roothelper import units


def test_units_say_socket_activation_group_and_mode() -> None:
    sock = units.socket_unit(Path("/run/banger/root.sock"), "banger")
    for line in ("ListenStream=/run/banger/root.sock", "SocketGroup=banger", "SocketMode=0660",
                 "WantedBy=sockets.target"):
        assert line in sock.splitlines()
    service = units.service_unit(Path("/opt/banger/bin/bangerd-root"), Path("/etc/banger/root.toml"))
    assert "ExecStart=/opt/banger/bin/bangerd-root --config /etc/banger/root.toml" in service
    assert "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW" in service.splitlines()


def test_install_without_root_says_run_it_with_sudo(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from banger.cli.system_cmds import system
    from banger.errors import Unavailable

    monkeypatch.setattr(os, "geteuid", lambda: 1001)
    result = CliRunner().invoke(system, ["install"])
    assert isinstance(result.exception, Unavailable)
    assert "run it with sudo (sudo banger system install)" in result.exception.message


def test_a_tun_device_users_cannot_open_is_named_with_the_fix(tmp_path: Path) -> None:
    from banger.roothelper.install import tun_problem

    tun = tmp_path / "tun"
    tun.write_text("")
    tun.chmod(0o600)
    assert tun_problem(tun) == (f"{tun} is mode 0600: users' VMMs cannot open their taps; "
                                f"`chmod 0666 {tun}` (Debian's default)")
    tun.chmod(0o666)
    assert tun_problem(tun) == ""
    assert "modprobe tun" in tun_problem(tmp_path / "missing")
