"""Resolve image and kernel names for the daemon: local -> catalog -> pull/build, shared pulls."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from banger.config import Config
from banger.debian.mirror import Mirror, resolve_mirror
from banger.errors import NotFound
from banger.images import catalog as image_catalog
from banger.images.manifest import ImageManifest, get_image, image_dir
from banger.kernels import catalog as kernel_catalog
from banger.kernels.guest_overlay import current_files, initrd_name, initrd_with_guest, prune
from banger.kernels.manifest import (
    INITRAMFS,
    VMLINUX,
    VMLINUZ,
    KernelManifest,
    get_kernel,
    kernel_dir,
    list_kernels,
)
from banger.paths import Paths
from banger.progress import Progress

log = logging.getLogger("banger.artifacts")
T = TypeVar("T")
ROOTFS = "rootfs.ext4"


@dataclass(frozen=True)
class KernelFiles:
    name: str
    kernel: Path
    initrd: Path
    vmlinux: Path | None
    digest: str = ""  # of its files (and of the guest files its initrd brings): changes with either
    own_initrd: bool = False  # banger built the initramfs, so it takes the guest overlay


@dataclass(frozen=True)
class ImageFiles:
    name: str
    rootfs: Path
    manifest: ImageManifest


def kernel_files(paths: Paths, m: KernelManifest) -> KernelFiles:
    d = kernel_dir(paths, m.name)
    vmlinux = d / VMLINUX if VMLINUX in m.files else None
    digest = hashlib.sha256(repr(sorted(m.files.items())).encode()).hexdigest()[:16]
    own = bool(m.busybox_version)
    if own:
        digest = f"{digest}-{current_files()[1]}"
    return KernelFiles(m.name, d / VMLINUZ, d / INITRAMFS, vmlinux, digest, own)


async def with_guest_files(paths: Paths, kernel: KernelFiles) -> KernelFiles:
    """The kernel with an initrd that installs banger's current guest files at boot."""
    if not kernel.own_initrd:
        return kernel
    initrd = await asyncio.to_thread(initrd_with_guest, kernel.initrd, kernel.name, kernel.digest,
                                     paths.cache_dir / "initrd")
    return dataclasses.replace(kernel, initrd=initrd)


def image_files(paths: Paths, m: ImageManifest) -> ImageFiles:
    return ImageFiles(m.name, image_dir(paths, m.name) / ROOTFS, m)


def cleanup_leftovers(paths: Paths) -> list[Path]:
    """Remove what a killed daemon left half-made: staging and trash dirs of images and kernels."""
    import shutil

    from banger.images.staging import cleanup_stale

    removed = cleanup_stale(paths)
    keep = set()
    for m in list_kernels(paths):
        k = kernel_files(paths, m)
        keep.add(initrd_name(k.name, k.digest))
    removed += prune(paths.cache_dir / "initrd", keep)
    if paths.kernels_dir.is_dir():
        for d in paths.kernels_dir.iterdir():
            if d.name.startswith((".staging-", ".trash-")) and d.is_dir():
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d)
    return removed


class Artifacts:
    """Concurrent requests for the same name share one pull or build."""

    def __init__(self, paths: Paths, config: Config) -> None:
        self.paths = paths
        self.config = config
        self._inflight: dict[str, asyncio.Future[Any]] = {}
        self._waiters: dict[str, int] = {}

    async def _shared(self, key: str, make: Callable[[], Awaitable[T]], progress: Progress) -> T:
        future = self._inflight.get(key)
        if future is not None:
            progress("waiting", None, f"{key} is already being fetched by another request")
        else:
            future = asyncio.ensure_future(make())
            self._inflight[key] = future
            self._waiters[key] = 0
            future.add_done_callback(lambda _: self._inflight.pop(key, None))
        self._waiters[key] += 1
        try:
            return cast(T, await asyncio.shield(future))
        except asyncio.CancelledError:
            if self._waiters[key] == 1:
                future.cancel()  # the last one waiting left: stop the pull (it cleans up)
            raise
        finally:
            self._waiters[key] -= 1

    def check_known(self, *, image: str | None = None, kernel: str | None = None) -> None:
        """Fail fast (before any work) on names that are neither local nor in a catalog."""
        if image is not None and not (image_dir(self.paths, image) / ROOTFS).exists():
            image_catalog.load_catalog().get(image)
        if kernel is not None and not (kernel_dir(self.paths, kernel) / "manifest.json").exists():
            kernel_catalog.lookup(kernel)

    async def kernel(self, name: str, progress: Progress, *, force: bool = False) -> KernelFiles:
        """The kernel's files; `force` pulls again even when it is present."""
        try:
            if not force:
                return await with_guest_files(self.paths,
                                              kernel_files(self.paths, get_kernel(self.paths, name)))
        except NotFound:
            pass
        entry = kernel_catalog.lookup(name)  # NotFound with suggestions when unknown
        manifest = await self._shared(f"kernel {name}", lambda: self._pull_kernel(entry, progress),
                                      progress)
        return await with_guest_files(self.paths, kernel_files(self.paths, manifest))

    def _mirror(self) -> Mirror:
        return resolve_mirror(self.config.debian_mirror,
                              allow_unsigned=self.config.debian_allow_unsigned)

    async def _pull_kernel(self, entry: kernel_catalog.CatalogEntry,
                           progress: Progress) -> KernelManifest:
        from banger.kernels.pull import pull_kernel

        mirror = self._mirror() if entry.kind == "debian" else None
        return await pull_kernel(entry, self.paths, mirror, progress)

    async def image(self, name: str, progress: Progress) -> ImageFiles:
        try:
            return image_files(self.paths, get_image(self.paths, name))
        except NotFound:
            entry = image_catalog.load_catalog().get(name)
        manifest = await self._shared(f"image {name}", lambda: self._fetch_image(entry, progress),
                                      progress)
        return image_files(self.paths, manifest)

    async def _fetch_image(self, entry: image_catalog.CatalogEntry,
                           progress: Progress) -> ImageManifest:
        if isinstance(entry, image_catalog.RecipeEntry):
            from banger.images.recipe import build_recipe

            return await build_recipe(entry, self.paths, self._mirror(),
                                      progress)
        if isinstance(entry, image_catalog.BundleEntry):
            from banger.images.bundle import import_bundle

            return await import_bundle(self.paths, entry.url, entry.sha256, progress, entry.name)
        from banger.images.oci.pull import PullOptions, pull_oci

        opts = PullOptions(name=entry.name, kernel=entry.kernel,
                           insecure_registries=list(self.config.oci_insecure_registries))
        return await pull_oci(self.paths, entry.ref, progress, opts)
