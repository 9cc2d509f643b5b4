"""Pulled kernels on disk: kernels/<name>/{vmlinuz,vmlinux,initramfs.img,manifest.json}."""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path

import msgspec

from banger.download import sha256_file
from banger.errors import NotFound, OperationFailed
from banger.kernels.catalog import suggest, validate_name
from banger.paths import Paths

log = logging.getLogger("banger.kernels")

MANIFEST = "manifest.json"
VMLINUZ = "vmlinuz"
VMLINUX = "vmlinux"
INITRAMFS = "initramfs.img"


class KernelManifest(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    kind: str  # "debian" or "bundle"
    kernel_version: str
    package: str = ""  # Debian package the kernel came from, e.g. linux-image-6.1.0-28-cloud-amd64
    package_version: str = ""
    files: dict[str, str] = {}  # file name in the kernel dir -> sha256
    source_url: str = ""
    mirror: str = ""
    pulled_at: str = ""  # ISO 8601, UTC
    modules: list[str] = []  # modules in the initramfs, in load order
    busybox_version: str = ""

    def path(self, paths: Paths, file: str) -> Path | None:
        """Absolute path of one of this kernel's files, or None if it has no such file."""
        return kernel_dir(paths, self.name) / file if file in self.files else None


def kernel_dir(paths: Paths, name: str) -> Path:
    return paths.kernels_dir / validate_name(name)


def write_manifest(directory: Path, manifest: KernelManifest) -> None:
    """Write manifest.json atomically (a reader never sees half of it)."""
    tmp = directory / f".{MANIFEST}.tmp"
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(manifest), indent=2) + b"\n")
    os.replace(tmp, directory / MANIFEST)


def read_manifest(directory: Path) -> KernelManifest:
    path = directory / MANIFEST
    try:
        return msgspec.json.decode(path.read_bytes(), type=KernelManifest)
    except FileNotFoundError as exc:
        raise NotFound(f"{directory} has no {MANIFEST}; pull the kernel again") from exc
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise OperationFailed(f"{path} is corrupt ({exc}); delete and pull the kernel again") from exc


def list_kernels(paths: Paths) -> list[KernelManifest]:
    """Every pulled kernel, by name; half-made (staging) and unreadable dirs are skipped."""
    if not paths.kernels_dir.is_dir():
        return []
    found: list[KernelManifest] = []
    for d in sorted(paths.kernels_dir.iterdir()):
        if d.name.startswith(".") or not d.is_dir():
            continue
        try:
            found.append(read_manifest(d))
        except (NotFound, OperationFailed) as exc:
            log.warning("skipping kernel dir %s: %s", d, exc)
    return found


def get_kernel(paths: Paths, name: str) -> KernelManifest:
    """The manifest of a pulled kernel; NotFound (with close names) if it isn't pulled."""
    directory = kernel_dir(paths, name)
    if not (directory / MANIFEST).exists():
        names = [k.name for k in list_kernels(paths)]
        raise NotFound(
            f"kernel {name!r} is not pulled{suggest(name, names) if names else ''}; "
            f"run `banger kernel pull {name}`"
        )
    return read_manifest(directory)


def verify_kernel(paths: Paths, manifest: KernelManifest) -> list[str]:
    """Names of files whose sha256 no longer matches the manifest (empty when intact)."""
    bad: list[str] = []
    directory = kernel_dir(paths, manifest.name)
    for file, digest in manifest.files.items():
        path = directory / file
        if not path.is_file() or sha256_file(path) != digest:
            bad.append(file)
    return bad


def remove_tree(path: Path) -> None:
    """Rename away first, then delete, so a crash never leaves a half-deleted kernel."""
    if not path.exists():
        return
    trash = path.parent / f".trash-{path.name}-{uuid.uuid4().hex[:8]}"
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def delete_kernel(paths: Paths, name: str) -> KernelManifest:
    """Delete a pulled kernel; return what was deleted. (Callers check no VM uses it.)"""
    manifest = get_kernel(paths, name)
    remove_tree(kernel_dir(paths, name))
    return manifest


__all__ = [
    "INITRAMFS",
    "MANIFEST",
    "VMLINUX",
    "VMLINUZ",
    "KernelManifest",
    "delete_kernel",
    "get_kernel",
    "kernel_dir",
    "list_kernels",
    "read_manifest",
    "remove_tree",
    "verify_kernel",
    "write_manifest",
]
