"""Firecracker backend pieces that run for real here: the root disk, version gate, selection."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from banger.config import load_config
from banger.errors import InvalidArgument
from banger.paths import resolve_paths
from banger.vmm.accel import KvmProbe
from banger.vmm.firecracker.version import BinaryProbe, parse_version, probe_binary
from banger.vmm.select import choose_vmm
from tests.unit.test_firecracker_api import backend, make_spec

BIN = Path(sys.executable).parent


def config_with(tmp: Path, text: str):  # type: ignore[no-untyped-def]
    home = tmp / "home"
    (home / "config").mkdir(parents=True, exist_ok=True)
    (home / "config" / "config.toml").write_text(text)
    return load_config(resolve_paths({"BANGER_HOME": str(home)}))


def fake_firecracker(tmp: Path, version: str) -> Path:
    exe = tmp / "firecracker"
    exe.write_text(f"#!/bin/sh\necho 'Firecracker v{version}'\necho\necho 'Supported ...'\n")
    exe.chmod(0o755)
    return exe


def test_prepare_disk_copies_sparse_and_grows_ext4(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    (spec.vm_dir / "root.ext4").unlink()
    subprocess.run(["mkfs.ext4", "-q", "-F", str(spec.boot.rootfs), "64M"], check=True)
    asyncio.run(backend(tmp_path, False).prepare_disk(spec))
    disk = spec.vm_dir / "root.ext4"
    assert disk.stat().st_size == spec.disk_mib * 1024 * 1024
    assert disk.stat().st_blocks * 512 < 64 * 1024 * 1024  # sparse: holes stay holes
    header = subprocess.run(["dumpe2fs", "-h", str(disk)], capture_output=True, text=True).stdout
    blocks = int(re.search(r"Block count:\s+(\d+)", header).group(1))  # type: ignore[union-attr]
    size = int(re.search(r"Block size:\s+(\d+)", header).group(1))  # type: ignore[union-attr]
    assert blocks * size == spec.disk_mib * 1024 * 1024
    assert not list(spec.vm_dir.glob("*.tmp"))


def test_version_gate(tmp_path: Path) -> None:
    assert parse_version("Firecracker v1.8.0\n\nSupported snapshot data format versions: 1.0") \
        == (1, 8, 0)
    old = config_with(tmp_path, f'firecracker_bin = "{fake_firecracker(tmp_path, "1.7.0")}"\n')
    probe = probe_binary(old)
    assert not probe.usable and "older than 1.8.0" in probe.reason and "\n" not in probe.reason
    (tmp_path / "firecracker").unlink()
    new = config_with(tmp_path, f'firecracker_bin = "{fake_firecracker(tmp_path, "1.10.1")}"\n')
    assert probe_binary(new).usable


def test_start_refuses_an_old_firecracker(tmp_path: Path) -> None:
    fc = backend(tmp_path, False)
    fc._binary = BinaryProbe("/x/firecracker", (1, 7, 0), "firecracker 1.7.0 is older than 1.8.0")
    with pytest.raises(InvalidArgument, match=r"install Firecracker >= 1\.8\.0"):
        asyncio.run(fc.start(make_spec(tmp_path)))
    assert not (make_spec(tmp_path).vm_dir / "firecracker.argv").exists()


def test_auto_picks_qemu_here_and_says_why(tmp_path: Path) -> None:
    choice = choose_vmm(config_with(tmp_path, ""))
    assert choice.name == "qemu"
    assert choice.reason.startswith("auto: qemu, because ")
    assert "firecracker" in choice.reason and "KVM" in choice.reason


def test_auto_picks_firecracker_when_usable(tmp_path: Path) -> None:
    ok_kvm = KvmProbe(True, True, "KVM usable")
    good = BinaryProbe("/usr/bin/firecracker", (1, 8, 0), "firecracker 1.8.0 at /usr/bin/firecracker")
    old = BinaryProbe("/usr/bin/firecracker", (1, 7, 0), "firecracker 1.7.0 is older than 1.8.0")
    auto = config_with(tmp_path, "")
    assert choose_vmm(auto, ok_kvm, good).name == "firecracker"
    assert choose_vmm(auto, ok_kvm, old).name == "qemu"
    assert choose_vmm(auto, KvmProbe(True, False, "KVM is PVM"), good).name == "qemu"
    explicit = config_with(tmp_path, 'vmm = "firecracker"\n')
    with pytest.raises(InvalidArgument, match=r"vmm = firecracker but .*older than 1\.8\.0"):
        choose_vmm(explicit, ok_kvm, old)


def test_doctor_shows_the_vmm_row(tmp_path: Path) -> None:
    env = {**os.environ, "BANGER_HOME": str(tmp_path / "home")}
    out = subprocess.run([str(BIN / "banger"), "doctor", "--json"], env=env, capture_output=True,
                         text=True, timeout=120).stdout
    data = json.loads(out)
    rows = {row["name"]: row for row in (data["checks"] if isinstance(data, dict) else data)}
    assert rows["vmm"]["detail"].startswith("qemu (auto: qemu, because ")
    assert rows["firecracker"]["status"] == "WARN"
