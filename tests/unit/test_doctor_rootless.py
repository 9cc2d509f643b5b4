"""doctor's checks for a normal user: subordinate ids, newuidmap, /dev/kvm access, root daemon."""

from __future__ import annotations

import grp
import os
from pathlib import Path

import pytest

from banger.config import Config, load_config
from banger.doctor import rootless_checks
from banger.doctor.check import Check
from banger.paths import Paths, resolve_paths
from banger.vmm.accel import kvm_access_fix


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Paths, Config]:
    paths = resolve_paths({"BANGER_HOME": str(tmp_path / "home")})
    return paths, load_config(paths)


@pytest.fixture
def as_alice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(os, "getuid", lambda: 1000)
    monkeypatch.setattr(rootless_checks, "current_user", lambda: "alice")


def test_root_daemon_warns(setup: tuple[Paths, Config], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    [check] = rootless_checks.running_user(*setup)
    assert check.status == "WARN"
    assert check.fix == "run banger as a normal user; only tap networking needs root"


@pytest.mark.usefixtures("as_alice")
def test_missing_subordinate_ids_fail_with_a_free_range(setup: tuple[Paths, Config],
                                                        tmp_path: Path) -> None:
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    subuid.write_text("bob:100000:65536\ncarol:165536:65536\n")
    subgid.write_text("bob:100000:65536\nalice:300000:65536\n")
    [check] = rootless_checks.subordinate_ids(*setup, subuid=subuid, subgid=subgid)
    assert check.status == "FAIL" and str(subuid) in check.detail
    assert str(subgid) not in check.detail  # alice's gid range is fine
    # The suggested range starts past every range in both files.
    assert check.fix == ("sudo usermod --add-subuids 365536-431071 "
                         "--add-subgids 365536-431071 alice")


@pytest.mark.parametrize("uids, gids, status", [
    ("alice:100000:65536\n", "1000:100000:65536\n", "PASS"),  # by name or by uid
    ("alice:100000:1000\n", "alice:100000:65536\n", "FAIL"),  # too small for Debian's ids
])
@pytest.mark.usefixtures("as_alice")
def test_subordinate_id_ranges(setup: tuple[Paths, Config], tmp_path: Path, uids: str,
                               gids: str, status: str) -> None:
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    subuid.write_text(uids)
    subgid.write_text(gids)
    [check] = rootless_checks.subordinate_ids(*setup, subuid=subuid, subgid=subgid)
    assert check.status == status


@pytest.mark.usefixtures("as_alice")
def test_missing_newuidmap_fails(setup: tuple[Paths, Config],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rootless_checks, "newuidmap_found", lambda: False)
    [check] = rootless_checks.newuidmap(*setup)
    assert check == Check("newuidmap", "FAIL", "newuidmap not found: image builds cannot run "
                          "as you", "install it: sudo apt-get install uidmap")


def _other_group() -> grp.struct_group:
    mine = set(os.getgroups()) | {os.getgid()}
    return next(g for g in grp.getgrall() if g.gr_gid not in mine)


def test_kvm_group_fix(tmp_path: Path) -> None:
    dev = tmp_path / "kvm"
    dev.touch()
    group = _other_group()
    os.chown(dev, -1, group.gr_gid)
    dev.chmod(0o660)
    assert kvm_access_fix(dev, groups=[]) == (
        f"add yourself to the {group.gr_name} group: sudo usermod -aG {group.gr_name} $USER, "
        "then log in again")
    assert kvm_access_fix(dev, groups=[group.gr_gid]) == (
        "log in again (your kvm group membership is not active in this session)")
    dev.chmod(0o600)  # a group would not help: only root opens it (TCG for everyone else)
    assert kvm_access_fix(dev, groups=[]) is None


def test_kvm_check_uses_the_group_fix(setup: tuple[Paths, Config],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from banger.vmm.accel import KvmProbe

    monkeypatch.setattr(rootless_checks, "probe_kvm",
                        lambda: KvmProbe(True, False, "cannot open /dev/kvm: Permission denied"))
    monkeypatch.setattr(rootless_checks, "kvm_access_fix",
                        lambda: "add yourself to the kvm group: sudo usermod -aG kvm $USER, "
                        "then log in again")
    [check] = rootless_checks.kvm(*setup)
    assert check.status == "WARN" and "TCG will be used" in check.detail
    assert check.fix.startswith("add yourself to the kvm group")
