"""Kernel manifests on disk: write/read, list, verify, delete."""

from __future__ import annotations

from pathlib import Path

import pytest

from banger.download import sha256_file
from banger.errors import NotFound, OperationFailed
from banger.kernels.manifest import (
    KernelManifest,
    delete_kernel,
    get_kernel,
    kernel_dir,
    list_kernels,
    read_manifest,
    verify_kernel,
    write_manifest,
)
from banger.paths import Paths


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path / "c", tmp_path / "s", tmp_path / "cache", tmp_path / "r")


def install(paths: Paths, name: str) -> KernelManifest:
    d = kernel_dir(paths, name)
    d.mkdir(parents=True)
    (d / "vmlinux").write_bytes(b"\x7fELF" + name.encode())
    m = KernelManifest(name=name, kind="bundle", kernel_version="6.1",
                       files={"vmlinux": sha256_file(d / "vmlinux")}, pulled_at="now")
    write_manifest(d, m)
    return m


def test_roundtrip_and_list(paths: Paths) -> None:
    a = install(paths, "alpha")
    install(paths, "beta")
    (paths.kernels_dir / ".staging-gamma-x").mkdir()
    (paths.kernels_dir / "broken").mkdir()
    (paths.kernels_dir / "broken" / "manifest.json").write_text("{nope")
    assert read_manifest(kernel_dir(paths, "alpha")) == a
    assert [k.name for k in list_kernels(paths)] == ["alpha", "beta"]
    assert a.path(paths, "vmlinux") == kernel_dir(paths, "alpha") / "vmlinux"
    assert a.path(paths, "initramfs.img") is None
    with pytest.raises(OperationFailed, match="corrupt"):
        read_manifest(paths.kernels_dir / "broken")


def test_verify_detects_changes(paths: Paths) -> None:
    m = install(paths, "alpha")
    assert verify_kernel(paths, m) == []
    (kernel_dir(paths, "alpha") / "vmlinux").write_bytes(b"changed")
    assert verify_kernel(paths, m) == ["vmlinux"]


def test_get_and_delete(paths: Paths) -> None:
    install(paths, "alpha")
    with pytest.raises(NotFound, match="did you mean alpha"):
        get_kernel(paths, "alpah")
    assert delete_kernel(paths, "alpha").name == "alpha"
    assert list(paths.kernels_dir.iterdir()) == []
    with pytest.raises(NotFound):
        delete_kernel(paths, "alpha")
    assert list_kernels(Paths(paths.config_dir, paths.state_dir / "none", paths.cache_dir,
                              paths.runtime_dir)) == []
