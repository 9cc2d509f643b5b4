"""Pull a catalog kernel into kernels/<name>/: bzImage, ELF vmlinux, initramfs, manifest.

Everything is built in kernels/.staging-<name>-<rand> and renamed into place at the end,
so a failed or cancelled pull never leaves a half-made kernel behind.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import stat
import tempfile
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from banger.archive import MIB, Extracted, extract_exact
from banger.debian.archive import DebianArchive, Stanza
from banger.debian.deb import extract_deb
from banger.debian.mirror import Mirror
from banger.download import download, sha256_file
from banger.errors import InvalidArgument, OperationFailed
from banger.kernels.catalog import CatalogEntry, validate_name
from banger.kernels.initramfs import MODULES, build_initramfs, index_modules, module_key
from banger.kernels.initramfs import module_depends as _module_depends
from banger.kernels.manifest import (
    INITRAMFS,
    VMLINUX,
    VMLINUZ,
    KernelManifest,
    kernel_dir,
    write_manifest,
)
from banger.kernels.vmlinux import ELF_MAGIC, kernel_version, write_vmlinux
from banger.paths import Paths
from banger.progress import Progress, no_progress

BUSYBOX_PACKAGE = "busybox-static"
# A kernel bundle holds only these regular files, each at most this big.
BUNDLE_FILES = {"vmlinux": 256 * MIB, "bzImage": 64 * MIB, "initrd": 512 * MIB}
MODULE_PATH = re.compile(r"^(?:usr/)?lib/modules/([^/]+)/(.+)$")
KERNEL_VERSION = re.compile(r"^[0-9][A-Za-z0-9.+_~-]{0,100}$")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _abi_package(meta: Stanza) -> str:
    """linux-image-cloud-amd64 depends on exactly the ABI package it currently means."""
    for name in meta.depends_names():
        if name.startswith("linux-image-") and name != meta.package:
            return name
    raise OperationFailed(
        f"{meta.package} {meta.version} depends on no linux-image package; "
        "the catalog entry's metapackage is wrong"
    )


def _kernel_selector(version: str, keys: set[str], *,
                     boot: bool = True) -> Callable[[str], bool]:
    """Select by exact name: this version's bzImage and module index files, the wanted .ko."""
    boot_names = {f"boot/vmlinuz-{version}"}
    for base in ("lib/modules", "usr/lib/modules"):
        boot_names |= {f"{base}/{version}/modules.order", f"{base}/{version}/modules.builtin"}

    def select(name: str) -> bool:
        if name in boot_names:
            return boot
        m = MODULE_PATH.match(name)
        if not m or m.group(1) != version:
            return False
        rest = m.group(2)
        return rest.endswith(".ko") and module_key(rest.rsplit("/", 1)[-1]) in keys

    return select


def _deb_version(package: str) -> str:
    """The kernel release a linux-image-<release> package installs (its vmlinuz's suffix)."""
    version = package.removeprefix("linux-image-").removesuffix("-unsigned")
    if not KERNEL_VERSION.match(version):
        raise OperationFailed(f"{package[:120]!r} is not a linux-image-<version> package; "
                              "the catalog entry's metapackage is wrong")
    return version


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _unpack_kernel(deb: Path, work: Path, version: str) -> tuple[Path, Path]:
    """Extract bzImage + the wanted modules (and their deps); return (bzImage, moddir)."""
    keys = {module_key(m) for m in MODULES}
    extract_deb(deb, work, select=_kernel_selector(version, keys), allow_links=False)
    image = work / "boot" / f"vmlinuz-{version}"
    if not _regular(image):
        raise OperationFailed(f"{deb.name} holds no boot/vmlinuz-{version}; "
                              "is it a kernel package?")
    moddir = next((p / version for p in (work / "lib/modules", work / "usr/lib/modules")
                   if (p / version).is_dir()), work / "lib/modules" / version)
    for _ in range(8):  # modules needed by MODULES but not in it: a pass per level
        missing = _missing_deps(moddir)
        if not missing:
            break
        extract_deb(deb, work, select=_kernel_selector(version, missing, boot=False),
                    allow_links=False)
        if not missing & set(index_modules(moddir)):
            break  # not in the package (built in): initramfs skips them
    return image, moddir


def _missing_deps(moddir: Path) -> set[str]:
    have = index_modules(moddir) if moddir.is_dir() else {}
    needed = {d for p in have.values() for d in _module_depends(p)}
    return needed - set(have)


def _unpack_busybox(deb: Path, work: Path) -> Path:
    names = ("bin/busybox", "usr/bin/busybox")
    extract_deb(deb, work, select=lambda n: n in names, allow_links=False)
    for n in names:
        if _regular(work / n):
            return work / n
    raise OperationFailed(f"{deb.name} holds no bin/busybox; is it busybox-static?")


async def _pull_debian(
    entry: CatalogEntry, paths: Paths, mirror: Mirror | None, staging: Path, progress: Progress
) -> KernelManifest:
    if mirror is None:
        raise InvalidArgument(f"kernel {entry.name} comes from Debian: configure debian_mirror")
    archive = DebianArchive(mirror, entry.suite, paths, component=entry.component, arch=entry.arch)
    progress("resolve", None, f"resolving {entry.metapackage} in {entry.suite}")
    meta = await archive.lookup(entry.metapackage, progress)
    kpkg = await archive.lookup(_abi_package(meta), progress)
    bpkg = await archive.lookup(BUSYBOX_PACKAGE, progress)
    kdeb = await archive.fetch_deb(kpkg, progress)
    bdeb = await archive.fetch_deb(bpkg, progress)
    work = staging / ".work"
    progress("unpack", None, f"unpacking {kdeb.name}")
    version = _deb_version(kpkg.package)
    bzimage, moddir = await asyncio.to_thread(_unpack_kernel, kdeb, work / "kernel", version)
    busybox = await asyncio.to_thread(_unpack_busybox, bdeb, work / "busybox")
    os.replace(bzimage, staging / VMLINUZ)
    modules = await _build_boot_files(staging, busybox, moddir, version, progress)
    shutil.rmtree(work)
    return KernelManifest(
        name=entry.name, kind="debian", kernel_version=version, package=kpkg.package,
        package_version=kpkg.version, files=_hashes(staging), source_url=archive.url(kpkg.filename),
        mirror=mirror.url, pulled_at=_now(), modules=modules, busybox_version=bpkg.version,
    )


async def _build_boot_files(
    staging: Path, busybox: Path, moddir: Path, version: str, progress: Progress
) -> list[str]:
    progress("vmlinux", None, "extracting the ELF vmlinux from the bzImage")
    await asyncio.to_thread(write_vmlinux, staging / VMLINUZ, staging / VMLINUX)
    progress("initramfs", None, "building the busybox initramfs")
    return await asyncio.to_thread(
        build_initramfs, staging / INITRAMFS, busybox=busybox, moddir=moddir, version=version
    )


def _hashes(staging: Path) -> dict[str, str]:
    return {f: sha256_file(staging / f) for f in (VMLINUZ, VMLINUX, INITRAMFS)
            if (staging / f).is_file()}


def _unpack_bundle(archive: Path, staging: Path, origin: str) -> Extracted:
    """The bundle's files by exact name, in a private directory under staging."""
    with archive.open("rb") as fh:
        return extract_exact(fh, BUNDLE_FILES, into=staging, origin=origin)


def _bundle_files(got: Extracted, staging: Path, origin: str) -> str:
    """Move bundle files into their kernel-dir names; return the kernel version."""
    files = got.files
    if "vmlinux" not in files and "bzImage" not in files:
        raise OperationFailed(f"{origin} has neither vmlinux nor bzImage")
    version = None
    if "bzImage" in files:
        version = kernel_version(files["bzImage"].read_bytes())
        os.replace(files["bzImage"], staging / VMLINUZ)
    if "vmlinux" in files:
        with files["vmlinux"].open("rb") as fh:
            if fh.read(4) != ELF_MAGIC:
                raise OperationFailed(f"{origin}: vmlinux is not an ELF file")
        os.replace(files["vmlinux"], staging / VMLINUX)
    else:
        write_vmlinux(staging / VMLINUZ, staging / VMLINUX)
    if "initrd" in files:
        os.replace(files["initrd"], staging / INITRAMFS)
    return version or _elf_version(staging / VMLINUX) or "unknown"


def _elf_version(vmlinux: Path) -> str | None:
    data = vmlinux.read_bytes()
    at = data.find(b"Linux version ")
    if at < 0:
        return None
    return data[at + 14 : at + 80].split(b" ", 1)[0].decode("ascii", "replace") or None


async def _pull_bundle(
    entry: CatalogEntry, paths: Paths, staging: Path, progress: Progress
) -> KernelManifest:
    cached = paths.downloads_dir / f"kernel-{entry.name}-{entry.sha256[:16]}.tar.zst"
    if not (cached.is_file() and sha256_file(cached) == entry.sha256):
        await download(entry.url, cached, sha256=entry.sha256, progress=progress)
    progress("unpack", None, f"unpacking {entry.url}")
    got = await asyncio.to_thread(_unpack_bundle, cached, staging, entry.url)
    try:
        version = await asyncio.to_thread(_bundle_files, got, staging, entry.url)
    finally:
        got.remove()
    return KernelManifest(
        name=entry.name, kind="bundle", kernel_version=version, files=_hashes(staging),
        source_url=entry.url, pulled_at=_now(),
    )


def _install(staging: Path, final: Path) -> None:
    """Swap the finished staging dir into place; an older pull is removed afterwards."""
    trash = None
    if final.exists():
        trash = final.parent / f".trash-{final.name}-{uuid.uuid4().hex[:8]}"
        os.replace(final, trash)
    os.replace(staging, final)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


async def pull_kernel(
    entry: CatalogEntry,
    paths: Paths,
    mirror: Mirror | None,
    progress: Progress | None = None,
) -> KernelManifest:
    """Fetch, verify and build a catalog kernel into kernels/<name>/; return its manifest."""
    report = progress or no_progress
    final = kernel_dir(paths, validate_name(entry.name))
    paths.kernels_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{entry.name}-", dir=paths.kernels_dir))
    try:
        if entry.kind == "debian":
            manifest = await _pull_debian(entry, paths, mirror, staging, report)
        else:
            manifest = await _pull_bundle(entry, paths, staging, report)
        write_manifest(staging, manifest)
        report("install", None, f"installing kernel {entry.name} {manifest.kernel_version}")
        _install(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # never leave half-made staging dirs
        raise
    report("done", 1.0, f"kernel {entry.name} {manifest.kernel_version} ready")
    return manifest


__all__ = ["BUNDLE_FILES", "pull_kernel"]
