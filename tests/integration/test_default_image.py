"""The default image (systemd, sshd, docker, build tools) boots and runs a command."""

from __future__ import annotations

import pytest

from tests.vmtest import SLIM, vm_home, vm_lock

pytestmark = [pytest.mark.vm, pytest.mark.network]


def test_default_image_runs_a_command_under_systemd() -> None:
    with vm_lock(), vm_home(SLIM, "debian-bookworm") as b:
        res = b.run("vm", "run", "--rm", "--image", "debian-bookworm", "--", "sh", "-c",
                    "grep ^ID= /etc/os-release; ps -p 1 -o comm=; "
                    "for c in git gcc make docker python3 sshd; do command -v $c; done | wc -l; "
                    "exit 5", timeout=600)
    assert res.returncode == 5, res.stderr
    assert res.stdout.splitlines() == ["ID=debian", "systemd", "6"]
    assert "spec: 1 vcpu · 1024 MiB · 4G disk · debian-bookworm" in res.stderr
