"""Build a recipe image: bootstrap Debian, slim it, make it a banger guest, pack it as ext4.

The same steps as root or as a normal user: mmdebstrap writes a tarball (`--mode=unshare`
when unprivileged), banger unpacks it with owners recorded (`images.rootfs`), customises the
tree, and packs it with the recorded owners, modes and device nodes (see docs/images.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from banger.debian.mirror import Mirror
from banger.durable import fsync_path, fsync_tree_top
from banger.errors import Conflict, OperationFailed
from banger.guest import GUEST_LIB, GuestFile
from banger.images import ext4
from banger.images.catalog import RecipeEntry
from banger.images.inject import files_digest, inject_files, packaged_files, prepare_guest
from banger.images.manifest import (
    MANIFEST,
    ROOTFS,
    ImageManifest,
    debian_arch,
    image_dir,
    sha256_file,
    staging_dir,
    utc_now,
    write_manifest,
)
from banger.images.rootfs import Finalized, RootfsTree
from banger.images.staging import bootstrap_workdir, remove_tree
from banger.paths import Paths
from banger.progress import Progress, no_progress
from banger.runner import Arg, arun, which
from banger.userns import as_namespace_root, newuidmap_found, unprivileged

log = logging.getLogger("banger.images.recipe")

BOOTSTRAP_TIMEOUT = 3600.0

# Docs, manuals and translations are dead weight in a sandbox; copyrights stay.
DPKG_EXCLUDES = [
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/lintian/*",
]
APT_OPTIONS = ['APT::Install-Recommends "false"', 'Acquire::Languages "none"']

# Relative to the root: emptied after the bootstrap (the directories themselves stay).
PRUNE_CONTENTS = ["var/lib/apt/lists", "var/cache/apt", "var/cache/debconf", "var/log"]
PRUNE_DOCS = ["usr/share/doc", "usr/share/man", "usr/share/info"]


def mmdebstrap_argv(entry: RecipeEntry, mirror: Mirror, tarball: Path) -> list[str]:
    """A bootstrap into a tarball (numeric owners inside): as a normal user in `unshare` mode,
    which needs the user's subordinate ids (the `uidmap` package)."""
    mode = "unshare" if unprivileged() else "root"
    argv = [
        "mmdebstrap",
        f"--variant={entry.variant}",
        f"--mode={mode}",
        "--format=tar",
        f"--architectures={debian_arch()}",
        "--components=main",
        f"--include={','.join(entry.packages)}",
    ]
    argv += [f"--aptopt={opt}" for opt in APT_OPTIONS]
    argv += [f"--dpkgopt={opt}" for opt in DPKG_EXCLUDES]
    return [*argv, entry.suite, str(tarball), mirror.url]


def bootstrap_argv(entry: RecipeEntry, mirror: Mirror, tarball: Path) -> list[str]:
    if not which("mmdebstrap"):
        raise OperationFailed("building images needs mmdebstrap; "
                              "install it (apt-get install mmdebstrap) and retry")
    if unprivileged() and not newuidmap_found():
        raise OperationFailed("building images as a normal user needs newuidmap; "
                              "install it (apt-get install uidmap) and retry")
    return mmdebstrap_argv(entry, mirror, tarball)


def _probe_mirror(mirror: Mirror, suite: str) -> None:
    url = f"{mirror.url}/dists/{suite}/Release"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=20):
            pass
    except urllib.error.HTTPError as exc:
        if exc.code != 405:  # some servers refuse HEAD; the bootstrap will tell
            raise OperationFailed(
                f"Debian mirror {mirror.url} ({mirror.source}) has no {suite}: HTTP {exc.code}"
            ) from exc
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise OperationFailed(
            f"cannot reach Debian mirror {mirror.url} ({mirror.source}): {reason}; "
            "check the network or set debian_mirror in config.toml"
        ) from exc


async def bootstrap(entry: RecipeEntry, mirror: Mirror, tarball: Path) -> None:
    """Bootstrap into `tarball`; mmdebstrap's work tree (TMPDIR) goes whatever happens."""
    # A clear one-line error beats mmdebstrap's apt-get failure tail.
    await asyncio.to_thread(_probe_mirror, mirror, entry.suite)
    argv = bootstrap_argv(entry, mirror, tarball)
    what = f"{argv[0]} {entry.suite} from {mirror.url} ({mirror.source})"
    with bootstrap_workdir() as work:
        env = {**os.environ, "LC_ALL": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive",
               "TMPDIR": str(work)}
        await arun(argv, env=env, timeout=BOOTSTRAP_TIMEOUT, what=what, new_session=True)


def _empty_dir(path: Path, keep: Sequence[str] = ()) -> None:
    if not path.is_dir() or path.is_symlink():
        return
    for child in path.iterdir():
        if child.name in keep:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def slim(root: Path) -> None:
    """Drop caches, package lists, logs and docs (what the dpkg excludes did not keep out)."""
    for rel in PRUNE_CONTENTS:
        _empty_dir(root / rel, keep=("partial", "archives"))
    _empty_dir(root / "var/cache/apt/archives", keep=("partial", "lock"))
    for rel in PRUNE_DOCS:
        _empty_dir(root / rel)
    conf = root / "etc/dpkg/dpkg.cfg.d/banger-slim"
    conf.parent.mkdir(parents=True, exist_ok=True)
    header = "# Managed by banger: keep the image small.\n"
    conf.write_text(header + "\n".join(DPKG_EXCLUDES) + "\n")


def installed_packages(root: Path) -> list[str]:
    """`name=version` of every installed package, from dpkg's status file (no dpkg needed)."""
    status = root / "var/lib/dpkg/status"
    found: list[str] = []
    for stanza in status.read_text(errors="replace").split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " "
        )
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            found.append(f"{fields['Package']}={fields.get('Version', '')}")
    return sorted(found)


async def precompile_agent(root: Path) -> None:
    """Byte-compile the agent with the guest's own python: under TCG, compiling it costs ~1 s.

    Unprivileged, chroot runs as root of a user namespace (the tree is the user's own).
    """
    if not (root / "usr/bin/python3").exists():
        log.info("the image has no python3: the agent compiles on first boot instead")
        return
    argv: list[Arg] = ["chroot", root, "python3", "-m", "compileall", "-q",
            "--invalidation-mode", "checked-hash", GUEST_LIB]
    await arun(as_namespace_root(argv), what="compileall")


def unpack_bootstrap(tarball: Path, root: Path) -> RootfsTree:
    """Unpack mmdebstrap's tarball through the one extractor, owners and devices recorded."""
    unpacked = RootfsTree(root, f"bootstrap {tarball.name}", devices=True)
    try:
        with open(tarball, "rb") as f:
            unpacked.apply(f, decompress=False)
    except BaseException:
        unpacked.close()
        raise
    return unpacked


async def _pack(root: Path, img: Path, done: Finalized, progress: Progress) -> int:
    usage = ext4.tree_usage(root)  # measured again: compileall added files after finalize
    usage = ext4.TreeUsage(usage.bytes, usage.inodes + len(done.devices))
    size = ext4.image_size(usage)
    progress("mkfs", 0.0, f"{usage.bytes >> 20} MiB of files into a {size >> 20} MiB ext4")
    await ext4.make_ext4(root, img, size, inodes=ext4.inode_count(size, usage))
    await ext4.set_owners(img, done.owners, done.devices)
    progress("mkfs", 1.0)
    return size


async def _customise(root: Path, tarball: Path, files: Sequence[GuestFile],
                     progress: Progress) -> tuple[Finalized, list[str]]:
    """Unpack, slim, make it a banger guest and compile the agent; the tree is ready for mkfs."""
    progress("customise", 0.0)
    root.mkdir()
    unpacked = await asyncio.to_thread(unpack_bootstrap, tarball, root)
    try:
        tarball.unlink()
        slim(root)
        prepare_guest(root)
        installed = installed_packages(root)
        progress("customise", 1.0)
        progress("inject", 0.0, f"{len(files)} guest files")
        inject_files(root, files)
        done = await asyncio.to_thread(unpacked.finalize)
    finally:
        unpacked.close()
    await precompile_agent(root)
    progress("inject", 1.0)
    return done, installed


async def _build(
    entry: RecipeEntry,
    stage: Path,
    mirror: Mirror,
    progress: Progress,
    files: Sequence[GuestFile],
    digest: str,
) -> ImageManifest:
    root, tarball = stage / "root", stage / "bootstrap.tar"
    progress("bootstrap", 0.0, f"{entry.suite} {entry.variant} + {len(entry.packages)} packages")
    await bootstrap(entry, mirror, tarball)
    progress("bootstrap", 1.0)
    done, installed = await _customise(root, tarball, files, progress)
    img = stage / ROOTFS
    await _pack(root, img, done, progress)
    remove_tree(root)  # the tree is in the image now; free the space before the rename
    progress("checksum", 0.0)
    manifest = ImageManifest(
        name=entry.name,
        distro=entry.distro,
        release=entry.suite,
        arch=debian_arch(),
        kernel=entry.kernel,
        description=entry.description,
        packages=list(entry.packages),
        installed=installed,
        systemd=entry.systemd,
        sha256=sha256_file(img),
        size=img.stat().st_size,
        built=utc_now(),
        guest_files=digest,
        source=f"recipe:{entry.name} mirror={mirror.url}",
    )
    write_manifest(stage / MANIFEST, manifest)
    progress("checksum", 1.0)
    return manifest


async def build_recipe(
    entry: RecipeEntry,
    paths: Paths,
    mirror: Mirror,
    progress: Progress = no_progress,
    *,
    files: Sequence[GuestFile] | None = None,
) -> ImageManifest:
    """Build `entry` into images/<name>/ (rootfs.ext4 + manifest.json), all or nothing.

    `files` overrides the packaged guest files (tests, custom agents).
    """
    final = image_dir(paths, entry.name)
    if final.exists():
        raise Conflict(f"image {entry.name!r} already exists; `banger image delete` it to rebuild")
    if files is None:
        files, digest = packaged_files()
    else:
        digest = files_digest(files)
    stage = staging_dir(paths, entry.name)
    stage.mkdir()
    try:
        manifest = await _build(entry, stage, mirror, progress, files, digest)
        publish(stage, final)
    except BaseException:
        remove_tree(stage)  # failure or cancellation: nothing half-made stays behind
        raise
    return manifest


def publish(stage: Path, final: Path) -> None:
    """Atomically move a finished staging dir into place; never replaces an existing image."""
    fsync_tree_top(stage)  # rootfs and manifest on disk before a name points at them
    try:
        os.rename(stage, final)
    except OSError as exc:
        if final.exists():
            msg = f"image {final.name!r} appeared while building; keeping that one"
            raise Conflict(msg) from exc
        raise
    fsync_tree_top(final)
    fsync_path(final.parent)


__all__ = [
    "bootstrap_argv",
    "build_recipe",
    "installed_packages",
    "mmdebstrap_argv",
    "publish",
    "slim",
    "unpack_bootstrap",
]
