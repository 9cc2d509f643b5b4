"""qcow2 headers read in Python agree with what qemu-img wrote."""

from __future__ import annotations

import subprocess
from pathlib import Path

from banger.vmm.qemu.qcow2 import backing_file


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def test_backing_file_of_an_overlay(tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(base), "16M")
    overlay = tmp_path / "vm" / "root.qcow2"
    overlay.parent.mkdir()
    qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(overlay))
    assert backing_file(overlay) == base
    assert backing_file(base) is None  # no backing file


def test_relative_backing_file_resolves_next_to_the_image(tmp_path: Path) -> None:
    qemu_img("create", "-q", "-f", "qcow2", str(tmp_path / "base.qcow2"), "16M")
    qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", "base.qcow2",
             str(tmp_path / "top.qcow2"))
    assert backing_file(tmp_path / "top.qcow2") == tmp_path / "base.qcow2"


def test_not_a_qcow2_or_missing(tmp_path: Path) -> None:
    raw = tmp_path / "root.ext4"
    raw.write_bytes(b"\0" * 4096)
    assert backing_file(raw) is None
    assert backing_file(tmp_path / "nope.qcow2") is None
