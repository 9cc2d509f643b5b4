"""`banger image pull REF`: skopeo into the blob cache, flatten, inject, mkfs, fix owners, publish."""

from __future__ import annotations

import asyncio
import functools
import os
import posixpath
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

from banger.errors import Conflict, InvalidArgument, OperationFailed
from banger.guest import GuestFile
from banger.images import ext4
from banger.images.catalog import DEFAULT_KERNEL, validate_name
from banger.images.inject import (
    files_digest,
    inject_files,
    packaged_files,
    prepare_guest,
    resolve_in_root,
)
from banger.images.manifest import (
    MANIFEST,
    ROOTFS,
    ImageManifest,
    image_dir,
    sha256_file,
    staging_dir,
    utc_now,
    write_manifest,
)
from banger.images.oci import layout, transport
from banger.images.oci.flatten import Finalized, Flattener
from banger.images.oci.ref import OciRef, parse_ref
from banger.images.recipe import publish
from banger.images.staging import remove_tree
from banger.paths import Paths
from banger.progress import Progress, no_progress

MIB = 1 << 20
GROWTH = 1.5
MIN_SIZE = 1 << 30
MIN_HEADROOM = 1.1  # a --size below content x 1.1 cannot hold the files plus ext4 metadata
PROGRESS_EVERY = 0.2
T = TypeVar("T")


@dataclass(frozen=True)
class PullOptions:
    name: str | None = None
    size: int | None = None  # bytes; None = content x 1.5, at least 1 GiB
    kernel: str = DEFAULT_KERNEL
    insecure_registries: Sequence[str] = ()
    files: Sequence[GuestFile] | None = None  # overrides the packaged guest files (tests)


@dataclass
class GuestFacts:
    distro: str = "unknown"
    release: str = ""
    python3: bool = False
    systemd: bool = False
    sshd: bool = False
    notes: list[str] = field(default_factory=list)


def image_size(usage: ext4.TreeUsage, requested: int | None) -> int:
    """content x 1.5 (at least 1 GiB) in whole MiB, or the requested size if it is big enough."""
    if requested is not None:
        if requested < usage.bytes * MIN_HEADROOM:
            raise InvalidArgument(f"--size {requested >> 20}M is too small for "
                                  f"{usage.bytes >> 20} MiB of files; try "
                                  f"{-(-int(usage.bytes * GROWTH) // MIB)}M or more")
        return -(-requested // MIB) * MIB
    return -(-max(MIN_SIZE, int(usage.bytes * GROWTH)) // MIB) * MIB


def guest_path(root: Path, path: str) -> Path | None:
    """The host path of `path` in the tree, symlinks followed inside the root; None if missing."""
    for _ in range(40):
        host = resolve_in_root(root, path) / posixpath.basename(path)
        if not host.is_symlink():
            return host if host.exists() else None
        target = os.readlink(host)
        path = posixpath.normpath(target if target.startswith("/")
                                  else posixpath.join(posixpath.dirname(path), target))
    return None


def _os_release(root: Path) -> dict[str, str]:
    found = guest_path(root, "/etc/os-release") or guest_path(root, "/usr/lib/os-release")
    fields: dict[str, str] = {}
    if found is None or not found.is_file():
        return fields
    for line in found.read_text(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip().isidentifier():
            fields[key.strip()] = value.strip().strip("\"'")
    return fields


def guest_facts(root: Path) -> GuestFacts:
    rel = _os_release(root)
    facts = GuestFacts(distro=rel.get("ID", "unknown") or "unknown",
                       release=rel.get("VERSION_CODENAME") or rel.get("VERSION_ID", ""))
    def has(*paths: str) -> bool:
        return any(guest_path(root, p) is not None for p in paths)

    facts.python3 = has("/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3")
    facts.systemd = has("/lib/systemd/systemd", "/usr/lib/systemd/systemd")
    facts.sshd = has("/usr/sbin/sshd", "/sbin/sshd")
    if not facts.python3:
        facts.notes.append("this image lacks python3: its first boot installs it and needs --nat")
    return facts


class _Reporter:
    """Flattening runs in a thread: throttle progress and hop back onto the event loop."""

    def __init__(self, progress: Progress, total: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.progress, self.total = progress, max(total, 1)
        self.stop = threading.Event()
        self.last = 0.0

    def __call__(self, done: int, message: str = "") -> None:
        if self.stop.is_set():
            raise OperationFailed("pull cancelled")
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY:
            self.last = now
            self.loop.call_soon_threadsafe(self.progress, "flatten",
                                           min(done / self.total, 0.99), message)


def _layer_progress(report: _Reporter, f: IO[bytes], before: int, what: str) -> None:
    report(before + f.tell(), what)


def flatten_image(cache: Path, image: layout.Image, tree: Path, report: _Reporter) -> Flattener:
    flattener = Flattener(tree)
    try:
        before = 0
        for i, layer in enumerate(image.layers, 1):
            what = f"layer {i}/{len(image.layers)} ({layer.digest[7:19]})"
            with open(layout.blob_path(cache, layer.digest), "rb") as f:
                flattener.apply(f, what, progress=functools.partial(_layer_progress, report, f,
                                                                    before, what))
            before += layer.size
    except BaseException:
        flattener.close()
        raise
    return flattener


async def _in_thread(report: _Reporter, fn: Callable[..., T], *args: object) -> T:
    """Run `fn` in a thread; on cancellation tell it to stop and wait until it has."""
    task: asyncio.Future[T] = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        report.stop.set()
        await asyncio.gather(task, return_exceptions=True)
        raise


async def _fetch(paths: Paths, ref: OciRef, opts: PullOptions, progress: Progress) -> str:
    """Resolve and copy into the cache; returns the cached manifest digest."""
    cache = layout.cache_root(paths)
    progress("resolve", None, f"{ref.canonical} ({transport.OS}/{transport.ARCH})")
    resolved = await transport.resolve(ref, list(opts.insecure_registries))
    progress("resolve", 1.0, f"{len(resolved.layers) - 1} layers, "
             f"{resolved.total_bytes >> 20} MiB compressed")
    async with layout.locked(cache, exclusive=True):
        need = transport.missing_bytes(cache, resolved)
        await transport.copy(ref, cache, list(opts.insecure_registries), need, progress)
        return layout.find_manifest(cache, ref.cache_tag())


async def _build(paths: Paths, ref: OciRef, digest: str, stage: Path, opts: PullOptions,
                 name: str, progress: Progress) -> ImageManifest:
    cache = layout.cache_root(paths)
    files, files_id = (packaged_files() if opts.files is None
                       else (list(opts.files), files_digest(opts.files)))
    tree = stage / "root"
    tree.mkdir()
    async with layout.locked(cache, exclusive=False):
        image = layout.load_image(cache, digest)
        report = _Reporter(progress, sum(layer.size for layer in image.layers))
        progress("flatten", 0.0, f"{len(image.layers)} layers")
        flattener = await _in_thread(report, flatten_image, cache, image, tree, report)
    try:
        for note in flattener.notes[:5]:
            progress("flatten", None, note)
        if len(flattener.notes) > 5:
            progress("flatten", None, f"... and {len(flattener.notes) - 5} more skipped entries")
        progress("flatten", 1.0)
        facts = guest_facts(tree)
        for note in facts.notes:
            progress("inject", None, note)
        progress("inject", 0.0, f"{len(files)} guest files")
        prepare_guest(tree)
        inject_files(tree, files)
        done: Finalized = flattener.finalize()
    finally:
        flattener.close()
    size = image_size(done.usage, opts.size)
    img = stage / ROOTFS
    progress("mkfs", 0.0, f"{done.usage.bytes >> 20} MiB of files into a {size >> 20} MiB ext4")
    await ext4.make_ext4(tree, img, size, inodes=ext4.inode_count(size, done.usage))
    remove_tree(tree)
    progress("fixup", 0.0, f"{len(done.owners)} owner/mode fixes")
    await ext4.set_owners(img, done.owners)
    progress("checksum", 0.0)
    manifest = ImageManifest(
        name=name, distro=facts.distro, release=facts.release, arch=transport.ARCH,
        kernel=opts.kernel, description=f"OCI image {ref.canonical}", systemd=facts.systemd,
        sha256=sha256_file(img), size=img.stat().st_size, built=utc_now(),
        guest_files=files_id, source=f"oci:{ref.canonical}@{digest}",
    )
    write_manifest(stage / MANIFEST, manifest)
    return manifest


async def pull_oci(paths: Paths, ref_text: str, progress: Progress = no_progress,
                   opts: PullOptions | None = None) -> ImageManifest:
    """Pull `ref_text` into images/<name>/ (rootfs.ext4 + manifest.json), all or nothing."""
    opts = opts or PullOptions()
    ref = parse_ref(ref_text)
    name = validate_name(opts.name or ref.default_name())
    final = image_dir(paths, name)
    if final.exists():
        raise Conflict(f"image {name!r} already exists; `banger image delete {name}` or pull "
                       "with --name NEW")
    digest = await _fetch(paths, ref, opts, progress)
    stage = staging_dir(paths, name)
    stage.mkdir()
    try:
        manifest = await _build(paths, ref, digest, stage, opts, name, progress)
        publish(stage, final)
    except BaseException:
        remove_tree(stage)  # failure or cancellation: nothing half-made stays behind
        raise
    return manifest


async def prune_cache(paths: Paths, *, dry_run: bool) -> layout.PruneReport:
    cache = layout.cache_root(paths)
    async with layout.locked(cache, exclusive=True):
        return await asyncio.to_thread(layout.prune, cache, dry_run=dry_run)


__all__ = ["GuestFacts", "PullOptions", "guest_facts", "image_size", "prune_cache", "pull_oci"]
