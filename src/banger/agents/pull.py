"""`agent pull`: an agent's Linux x64 package from the npm registry into the cache, verified.

Order: packument (bounded, typed) -> version -> tarball downloaded to a staging dir with a
size cap -> its sha512 checked against the packument's `dist.integrity` -> only then opened,
through banger.archive, taking just the files the catalog names -> manifest -> renamed into
the cache. Any failure removes the staging dir: nothing half-verified is ever cached.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import tarfile
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from banger.agents import cache
from banger.agents.cache import AgentManifest, FileDigest
from banger.agents.catalog import EXACT_VERSION, VERSION, AgentSpec
from banger.agents.registry import Packument, checked_registry, fetch_packument, sha512_of, tarball_url
from banger.archive import GIB, Limits
from banger.archive.extract import Select, extract
from banger.archive.limits import ArchiveError, refuse
from banger.download import download, human_bytes, sha256_file
from banger.errors import NotFound, OperationFailed
from banger.paths import Paths
from banger.progress import Progress, no_progress
from banger.textsafe import one_line

TARBALL_MAX = 1 * GIB  # the biggest today (claude) is ~190 MiB compressed
_LOCKS: dict[tuple[str, str], asyncio.Lock] = {}
LIMITS = Limits(members=20_000, member_bytes=1 * GIB, total_bytes=2 * GIB, stream_bytes=4 * GIB)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def resolve_version(spec: AgentSpec, doc: Packument, wanted: str | None) -> str:
    """The agent version NAME@wanted means: a dist-tag (default `latest`) or an exact version."""
    tag = wanted or "latest"
    version = doc.dist_tags.get(tag) if not EXACT_VERSION.fullmatch(tag) else tag
    if version is None:
        tags = ", ".join(sorted(doc.dist_tags)[:10]) or "none"
        raise NotFound(f"{spec.package} has no dist-tag {tag!r} (tags: {one_line(tags, 200)})")
    if spec.version_suffix and version.endswith(spec.version_suffix):
        version = version[: -len(spec.version_suffix)]
    if not VERSION.fullmatch(version):
        raise OperationFailed(f"{spec.package}: the registry's version {one_line(version, 80)!r} "
                              "is not a plain npm version; refusing it")
    return version


def _select(wanted: set[str], origin: str) -> Select:
    def select(name: str, m: tarfile.TarInfo) -> str | None:
        _top, _, rel = name.partition("/")  # npm packs under one top dir, `package/`
        if rel not in wanted:
            return None
        if not m.isreg():
            raise refuse(origin, m.name, "not a regular file")
        return rel
    return select


def verify_integrity(path: Path, integrity: str | None, what: str) -> None:
    expected = sha512_of(integrity, what)
    h = hashlib.sha512()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    if h.digest() != expected:
        got = base64.b64encode(h.digest()).decode()
        raise OperationFailed(f"{what}: the tarball's sha512 (sha512-{got[:16]}...) is not the "
                              "registry's integrity; refusing it (nothing was cached)")


def unpack(tgz: Path, dest: Path, spec: AgentSpec, what: str) -> list[FileDigest]:
    """The catalog's files (and nothing else) out of the verified tarball into dest."""
    wanted = set(spec.files)
    with tgz.open("rb") as fh:
        extract(fh, dest, origin=what, select=_select(wanted, what), limits=LIMITS, links=False)
    digests = []
    for rel in spec.files:
        path = dest / rel
        if not path.is_file() or path.is_symlink():
            raise ArchiveError(f"{what} lacks {rel}; it is not the package banger expects")
        os.chmod(path, 0o755)  # every shipped file is an executable
        digests.append(FileDigest(rel, path.stat().st_size, sha256_file(path)))
    return digests


async def pull(paths: Paths, spec: AgentSpec, wanted: str | None,
               registry: str | Callable[[], Awaitable[str]], *, force: bool = False,
               progress: Progress = no_progress) -> AgentManifest:
    """`registry`: its URL, or how to learn it (only asked when the cache cannot answer)."""
    if wanted and EXACT_VERSION.fullmatch(wanted) and not force:
        hit = cache.cached(paths, spec.name, wanted)
        if hit is not None:  # an exact version in the cache needs no network
            hit.cached = True
            return hit
    registry = checked_registry(registry if isinstance(registry, str) else await registry())
    progress("resolve", None, f"{spec.package} from {registry}")
    doc = await fetch_packument(registry, spec.package)
    version = resolve_version(spec, doc, wanted)
    # Two editors starting at once: one fetches, the other then finds it in the cache.
    async with _LOCKS.setdefault((str(paths.cache_dir), spec.name), asyncio.Lock()):
        hit = None if force else cache.cached(paths, spec.name, version)
        if hit is not None and hit.integrity == _integrity(spec, doc, version, registry):
            hit.cached = True
            return hit
        # Not cached, or cached from other bytes than the registry names now: fetch again.
        return await _fetch(paths, spec, doc, version, registry, progress)


def _integrity(spec: AgentSpec, doc: Packument, version: str, registry: str) -> str:
    """The sha512 SRI the registry gives for this version (only its sha512 is kept)."""
    npm_version = spec.npm_version(version)
    vdoc = doc.versions.get(npm_version)
    if vdoc is None or vdoc.version != npm_version:
        raise NotFound(f"{spec.package} has no version {npm_version} on {registry}")
    what = f"{spec.package}@{npm_version}"
    return "sha512-" + base64.b64encode(sha512_of(vdoc.dist.integrity, what)).decode()


async def _fetch(paths: Paths, spec: AgentSpec, doc: Packument, version: str, registry: str,
                 progress: Progress) -> AgentManifest:
    # No usable integrity: refused before downloading. Only its sha512 is kept (the SRI string
    # may hold other, unchecked tokens).
    integrity = _integrity(spec, doc, version, registry)
    npm_version = spec.npm_version(version)
    vdoc = doc.versions[npm_version]
    what = f"{spec.package}@{npm_version}"
    url = tarball_url(vdoc, what)
    base = cache.agents_dir(paths) / spec.name
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=base))
    try:
        tgz = staging / "package.tgz"
        await download(url, tgz, progress=progress, limit=TARBALL_MAX)
        progress("verify", None, f"sha512 of {human_bytes(tgz.stat().st_size)}")
        await asyncio.to_thread(verify_integrity, tgz, integrity, what)
        progress("unpack", None, what)
        ship = staging / cache.ship_dir_name(spec.name, version)
        files = await asyncio.to_thread(unpack, tgz, ship, spec, what)
        (ship / cache.MARKER).write_text(integrity + "\n")
        manifest = AgentManifest(spec.name, version, spec.package, npm_version, registry, url,
                                 integrity, tgz.stat().st_size, files, spec.binary,
                                 _now())
        tgz.unlink()
        cache.write_manifest(staging, manifest)
        vdir = cache.version_dir(paths, spec.name, version)
        cache.install(staging, vdir)
    except BaseException:
        cache.remove_staging(staging)
        raise
    manifest.dir = str(vdir / cache.ship_dir_name(spec.name, version))
    return manifest


__all__ = ["LIMITS", "TARBALL_MAX", "pull", "resolve_version", "unpack", "verify_integrity"]
