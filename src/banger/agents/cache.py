"""The agent cache: agents/<name>/<version>/ under the user's cache dir.

Each version dir holds `manifest.json` (what was fetched from where and how it was verified)
and `<name>-<version>/`, the files that ship into a guest plus `.banger-integrity` (the
registry's sha512 integrity, which lets a guest's copy be recognised). A version dir appears
only complete: it is built in a staging dir and renamed into place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import msgspec

from banger.agents.catalog import VERSION
from banger.durable import fsync_path
from banger.paths import Paths

MANIFEST = "manifest.json"
MARKER = ".banger-integrity"


class FileDigest(msgspec.Struct):
    path: str  # relative to the shipped dir
    size: int
    sha256: str


class AgentManifest(msgspec.Struct):
    name: str
    version: str  # the agent's version (what `NAME@VERSION` names)
    package: str  # the npm package
    npm_version: str  # the package version fetched (codex: `X-linux-x64`)
    registry: str
    tarball: str
    integrity: str  # the registry's sha512 SRI the tarball matched before it was opened
    tarball_bytes: int
    files: list[FileDigest]
    binary: str  # the executable, relative to the shipped dir
    pulled_at: str
    dir: str = ""  # the shipped dir on this host (filled in when read)
    cached: bool = False  # this pull found it in the cache (filled in by pull)


def agents_dir(paths: Paths) -> Path:
    return paths.cache_dir / "agents"


def version_dir(paths: Paths, name: str, version: str) -> Path:
    return agents_dir(paths) / name / version


def ship_dir_name(name: str, version: str) -> str:
    return f"{name}-{version}"


def _read(vdir: Path, name: str) -> AgentManifest | None:
    try:
        raw = (vdir / MANIFEST).read_bytes()
        m = msgspec.json.decode(raw, type=AgentManifest)
    except (OSError, msgspec.DecodeError):
        return None
    ship = vdir / ship_dir_name(name, m.version)
    if m.name != name or m.version != vdir.name or not _files_present(ship, m):
        return None
    m.dir = str(ship)
    return m


def _files_present(ship: Path, m: AgentManifest) -> bool:
    """Our own cache: sizes are checked (a truncated file after a crash), not re-hashed."""
    for f in m.files:
        try:
            if (ship / f.path).stat().st_size != f.size:
                return False
        except OSError:
            return False
    return True


def cached(paths: Paths, name: str, version: str) -> AgentManifest | None:
    if not VERSION.fullmatch(version):
        return None
    return _read(version_dir(paths, name, version), name)


def cached_versions(paths: Paths, name: str) -> list[AgentManifest]:
    """Complete cached versions of an agent, newest pull first."""
    base = agents_dir(paths) / name
    try:
        entries = sorted(base.iterdir())
    except OSError:
        return []
    found = [m for d in entries if VERSION.fullmatch(d.name) and (m := _read(d, name)) is not None]
    return sorted(found, key=lambda m: m.pulled_at, reverse=True)


def write_manifest(vdir: Path, m: AgentManifest) -> None:
    (vdir / MANIFEST).write_bytes(msgspec.json.format(msgspec.json.encode(m), indent=2) + b"\n")


def install(staging: Path, vdir: Path) -> None:
    """Rename a finished staging dir into place (an old, broken copy is replaced)."""
    vdir.parent.mkdir(parents=True, exist_ok=True)
    if vdir.exists():
        shutil.rmtree(vdir)
    os.replace(staging, vdir)
    fsync_path(vdir.parent)


def remove_staging(staging: Path) -> None:
    with contextlib.suppress(OSError):
        shutil.rmtree(staging)


__all__ = ["MARKER", "AgentManifest", "FileDigest", "agents_dir", "cached", "cached_versions",
           "install", "remove_staging", "ship_dir_name", "version_dir", "write_manifest"]
