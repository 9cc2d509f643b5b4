"""The blob cache: one OCI image layout (index.json + blobs/sha256/<hex>) shared by every pull."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from banger.errors import NotFound, OperationFailed
from banger.paths import Paths

REF_ANNOTATION = "org.opencontainers.image.ref.name"
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")
DIGEST_RE = re.compile(r"^(sha256|sha512):([0-9a-f]{64,128})$")


@dataclass(frozen=True)
class Layer:
    digest: str
    size: int
    media_type: str


@dataclass(frozen=True)
class Image:
    manifest_digest: str
    config: dict[str, Any]
    layers: list[Layer]


@dataclass(frozen=True)
class PruneReport:
    blobs: int
    bytes: int
    kept: int


def cache_root(paths: Paths) -> Path:
    return paths.cache_dir / "oci"


@contextlib.asynccontextmanager
async def locked(root: Path, *, exclusive: bool) -> AsyncIterator[None]:
    """Writers (skopeo copy, prune) exclude each other and readers (flattening)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root.parent / "oci.lock", "a") as f:
        # flock in a thread: a pull waiting for another must not block the daemon's loop
        await asyncio.to_thread(fcntl.flock, f, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def blob_path(root: Path, digest: str) -> Path:
    m = DIGEST_RE.match(digest)
    if not m:
        raise OperationFailed(f"OCI cache: bad digest {digest!r}")
    return root / "blobs" / m.group(1) / m.group(2)


def _read_json(root: Path, digest: str) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(blob_path(root, digest).read_bytes())
    except FileNotFoundError as exc:
        raise OperationFailed(f"OCI cache is missing blob {digest}; pull again") from exc
    except ValueError as exc:
        raise OperationFailed(f"OCI cache blob {digest} is not JSON; "
                              "`banger image cache prune` and pull again") from exc
    return data


def read_index(root: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((root / "index.json").read_bytes())
        return data
    except FileNotFoundError:
        return {"schemaVersion": 2, "manifests": []}
    except ValueError as exc:
        raise OperationFailed(f"{root}/index.json is corrupt; delete {root} and pull again") from exc


def find_manifest(root: Path, tag: str) -> str:
    """The manifest digest tagged `tag` in the cache's index."""
    for desc in read_index(root).get("manifests", []):
        if desc.get("annotations", {}).get(REF_ANNOTATION) == tag:
            return str(desc["digest"])
    raise NotFound(f"OCI cache has no image tagged {tag!r}")


def load_image(root: Path, manifest_digest: str) -> Image:
    manifest = _read_json(root, manifest_digest)
    if manifest.get("mediaType") in INDEX_TYPES or "manifests" in manifest:
        raise OperationFailed("OCI cache holds a manifest list, not a linux/amd64 image")
    config = _read_json(root, manifest["config"]["digest"])
    layers = [Layer(d["digest"], int(d.get("size", 0)), d.get("mediaType", ""))
              for d in manifest.get("layers", [])]
    return Image(manifest_digest, config, layers)


def referenced_blobs(root: Path) -> set[str]:
    """Every digest reachable from index.json (nested indexes, manifests, configs, layers)."""
    seen: set[str] = set()
    todo = [str(d["digest"]) for d in read_index(root).get("manifests", [])]
    while todo:
        digest = todo.pop()
        if digest in seen:
            continue
        seen.add(digest)
        try:
            doc = json.loads(blob_path(root, digest).read_bytes())
        except (FileNotFoundError, ValueError, OperationFailed):
            continue
        if not isinstance(doc, dict):
            continue
        children = [*doc.get("manifests", []), *doc.get("layers", [])]
        if isinstance(doc.get("config"), dict):
            children.append(doc["config"])
        todo += [str(c["digest"]) for c in children if isinstance(c, dict) and "digest" in c]
    return seen


def prune(root: Path, *, dry_run: bool) -> PruneReport:
    """Delete blobs no index entry references (and skopeo's leftover temp files)."""
    if not (root / "blobs").is_dir():
        return PruneReport(0, 0, 0)
    keep = referenced_blobs(root)
    freed = count = kept = 0
    for algo_dir in (root / "blobs").iterdir():
        if not algo_dir.is_dir() or algo_dir.is_symlink():
            continue
        for blob in algo_dir.iterdir():
            if f"{algo_dir.name}:{blob.name}" in keep:
                kept += 1
                continue
            freed += blob.lstat().st_size
            count += 1
            if not dry_run:
                blob.unlink()
    for junk in root.iterdir():  # interrupted copies leave temp files next to index.json
        if junk.is_file() and junk.name not in ("index.json", "oci-layout"):
            freed += junk.lstat().st_size
            count += 1
            if not dry_run:
                junk.unlink()
    return PruneReport(count, freed, kept)


def tree_bytes(root: Path) -> int:
    """Bytes under the cache (to report download progress while skopeo writes)."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


__all__ = [
    "Image",
    "Layer",
    "PruneReport",
    "blob_path",
    "cache_root",
    "find_manifest",
    "load_image",
    "locked",
    "prune",
    "read_index",
    "referenced_blobs",
    "tree_bytes",
]
