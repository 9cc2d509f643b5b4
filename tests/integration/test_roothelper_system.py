"""`banger system install | uninstall | status` as root, under a --root directory that holds
copies of the account files (groupadd/usermod --prefix), so the host's own /etc is untouched.

No systemd here: units are checked by their content, not by activation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from banger.errors import ConfigError, Conflict
from banger.roothelper import units
from banger.roothelper.config import RootConfig
from banger.roothelper.install import read_user_bridge
from tests.unpriv import ensure_user

BANGER = str(Path(sys.executable).parent / "banger")
USER = ensure_user().pw_name  # the suite's unprivileged user (made when missing)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="system install runs as root")


def banger(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SUDO_USER": USER, "BANGER_ROOT_SOCKET": str(root / "none.sock")}
    return subprocess.run([BANGER, "system", *args, "--root", str(root)], capture_output=True,
                          text=True, env=env, timeout=60)


def group_line(root: Path, name: str = "banger") -> str | None:
    lines = (root / "etc" / "group").read_text().splitlines()
    return next((line for line in lines if line.split(":")[0] == name), None)


def test_install_then_uninstall_leaves_nothing_behind(root: Path) -> None:
    res = banger(root, "install")
    assert res.returncode == 0, res.stderr
    line = group_line(root)
    assert line is not None and USER in line.split(":")[3].split(",")
    assert "created group banger" in res.stdout and "log in again" in res.stdout
    helper = Path(sys.executable).parent / "bangerd-root"
    assert f"no systemd here: start the helper as root with `{helper} --socket " \
           "/run/banger/root.sock &`" in res.stdout
    config = root / "etc" / "banger" / "root.toml"
    assert 'bridge_cidr = "10.77.0.0/24"' in config.read_text()
    assert json.loads((root / "etc/banger/installed.json").read_text())["group_created"] is True
    status = json.loads(banger(root, "status", "--json").stdout)
    assert status["installed"] is True and status["reachable"] is False
    assert "sudo banger system install" in status["problem"] and status["member"] is True
    again = banger(root, "install")
    assert f"kept {config}" in again.stdout and "created group" not in again.stdout
    res = banger(root, "uninstall")
    assert res.returncode == 0, res.stderr
    assert "removed group banger" in res.stdout and f"removed {config}" in res.stdout
    assert group_line(root) is None and not (root / "etc" / "banger").exists()
    assert "nothing to remove" in banger(root, "uninstall").stdout


def test_uninstall_keeps_a_group_that_was_there_before(root: Path) -> None:
    subprocess.run(["groupadd", "--prefix", str(root), "banger"], check=True)
    assert banger(root, "install").returncode == 0
    res = banger(root, "uninstall")
    assert res.returncode == 0 and "removed group" not in res.stdout
    assert group_line(root) is not None


def test_install_refuses_to_make_root_run_code_another_user_can_change(tmp_path: Path) -> None:
    code = tmp_path / "site-packages" / "banger"
    code.mkdir(parents=True)
    (code / "__init__.py").write_text("")
    units.check_root_only(code)  # all root's: fine
    os.chown(code / "__init__.py", 1001, 1001)
    with pytest.raises(Conflict, match=r"code that another user can change .*__init__.py, uid 1001"):
        units.check_root_only(code)
    os.chown(code / "__init__.py", 0, 0)
    code.chmod(0o777)
    with pytest.raises(Conflict, match="another user can change"):
        units.check_root_only(code)


def test_the_users_bridge_settings_are_read_only_from_their_own_file(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('bridge_name = "br-mine"\nbridge_cidr = "10.88.0.0/24"\nvmm = "qemu"\n')
    os.chown(cfg, 1001, 1001)
    assert read_user_bridge(cfg, 1001) == RootConfig(bridge_name="br-mine",
                                                     bridge_cidr="10.88.0.0/24")
    with pytest.raises(ConfigError, match="not a regular file of uid 1002"):
        read_user_bridge(cfg, 1002)
    link = tmp_path / "link.toml"
    link.symlink_to("/etc/shadow")
    assert read_user_bridge(link, 1001) == RootConfig()  # never followed
    cfg.write_text('bridge_cidr = "8.8.8.0/24"\n')
    with pytest.raises(ConfigError, match="bridge_cidr"):
        read_user_bridge(cfg, 1001)
