"""doctor's `.vm names` row: a running VM's name through the host's resolver, else the wiring."""

from __future__ import annotations

from pathlib import Path

import pytest

from banger.config import load_config
from banger.doctor import dns_checks
from banger.doctor.check import Check
from banger.paths import resolve_paths


def rows(tmp_path: Path, resolve: dict[str, set[str]]) -> list[Check]:
    paths = resolve_paths({"BANGER_HOME": str(tmp_path / "home")})
    return list(dns_checks.vm_names(paths, load_config(paths),
                                    resolve=lambda name: resolve.get(name, set())))


def test_a_running_vm_that_resolves_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dns_checks, "running_vms", lambda paths: {"web": "127.81.232.2"})
    [row] = rows(tmp_path, {"web.vm": {"127.81.232.2"}})
    assert (row.status, row.detail) == ("PASS", "web.vm resolves to 127.81.232.2 from the host")


def test_a_running_vm_that_does_not_resolve_warns_with_the_fix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dns_checks, "running_vms", lambda paths: {"web": "127.81.232.2"})
    [row] = rows(tmp_path, {})
    assert row.status == "WARN" and row.detail.startswith("web.vm does not resolve from the host")
    assert "sudo banger system install" in row.fix and "banger ssh-config --install" in row.fix
    [row] = rows(tmp_path, {"web.vm": {"10.1.1.1"}})
    assert row.detail == "web.vm gives 10.1.1.1 from the host (want 127.81.232.2)"


def test_no_running_vm_and_no_wiring_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from banger.roothelper import resolver

    monkeypatch.setattr(resolver, "RESOLVER_FILES", (str(tmp_path / "none.conf"),))
    [row] = rows(tmp_path, {})  # a fresh home: no database, so no running VM
    assert row.status == "WARN" and "does not send .vm to banger" in row.detail


def test_the_host_resolver_is_asked_with_a_deadline() -> None:
    assert dns_checks.host_resolves("localhost") <= {"127.0.0.1"}
