"""The blob cache: one OCI image layout (index.json + blobs/sha256/<hex>) shared by every pull."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import msgspec

from banger.errors import NotFound, OperationFailed
from banger.paths import Paths

REF_ANNOTATION = "org.opencontainers.image.ref.name"
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")
DIGEST_RE = re.compile(r"(sha256|sha512):([0-9a-f]{64}|[0-9a-f]{128})")
MAX_DOCUMENT = 4 << 20  # the distribution spec's manifest limit; configs and indexes alike
Short = Annotated[str, msgspec.Meta(max_length=1024)]


class Descriptor(msgspec.Struct):
    """A registry's pointer to a blob; every field a hostile registry could bend is bounded."""

    digest: Annotated[str, msgspec.Meta(pattern="^" + DIGEST_RE.pattern + r"\Z", max_length=140)]
    size: Annotated[int, msgspec.Meta(ge=0, le=1 << 44)] = 0
    mediaType: Short = ""
    annotations: Annotated[dict[Short, Annotated[str, msgspec.Meta(max_length=4096)]],
                           msgspec.Meta(max_length=256)] = {}


Descriptors = Annotated[list[Descriptor], msgspec.Meta(max_length=4096)]


class Document(msgspec.Struct):
    """An index, a manifest list or an image manifest: the fields banger reads."""

    mediaType: Short = ""
    manifests: Descriptors | None = None
    config: Descriptor | None = None
    layers: Descriptors = []


@dataclass(frozen=True)
class Layer:
    digest: str
    size: int
    media_type: str


@dataclass(frozen=True)
class Image:
    manifest_digest: str
    config: dict[str, Any]  # the image config, checked to be one bounded JSON object
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
    m = DIGEST_RE.fullmatch(digest)
    if not m:
        raise OperationFailed(f"OCI cache: bad digest {digest!r}")
    return root / "blobs" / m.group(1) / m.group(2)


def _decode(path: Path, what: str, into: type[Any]) -> Any:
    """A JSON document from the cache, bounded in size and shape; one line when it is not."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_DOCUMENT + 1)
    except FileNotFoundError as exc:
        raise OperationFailed(f"OCI cache is missing {what}; pull again") from exc
    if len(data) > MAX_DOCUMENT:
        raise OperationFailed(f"OCI {what} is larger than 4 MiB; refusing it")
    try:
        return msgspec.json.decode(data, type=into)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise OperationFailed(f"OCI {what} is invalid ({detail}); "
                              "`banger image cache prune` and pull again") from None


def _read_document(root: Path, digest: str) -> Document:
    doc: Document = _decode(blob_path(root, digest), f"blob {digest}", Document)
    return doc


def read_index(root: Path) -> Document:
    if not (root / "index.json").exists():
        return Document(manifests=[])
    index: Document = _decode(root / "index.json", "cache index.json", Document)
    return index


def find_manifest(root: Path, tag: str) -> str:
    """The manifest digest tagged `tag` in the cache's index."""
    for desc in read_index(root).manifests or []:
        if desc.annotations.get(REF_ANNOTATION) == tag:
            return desc.digest
    raise NotFound(f"OCI cache has no image tagged {tag!r}")


def load_image(root: Path, manifest_digest: str) -> Image:
    manifest = _read_document(root, manifest_digest)
    if manifest.mediaType in INDEX_TYPES or manifest.manifests is not None:
        raise OperationFailed("OCI cache holds a manifest list, not a linux/amd64 image")
    if manifest.config is None:
        raise OperationFailed(f"OCI manifest {manifest_digest} names no image config")
    config: dict[str, Any] = _decode(blob_path(root, manifest.config.digest),
                                     f"image config {manifest.config.digest}", dict[str, Any])
    layers = [Layer(d.digest, d.size, d.mediaType) for d in manifest.layers]
    return Image(manifest_digest, config, layers)


def referenced_blobs(root: Path) -> set[str]:
    """Every digest reachable from index.json (nested indexes, manifests, configs, layers)."""
    seen: set[str] = set()
    todo = [d.digest for d in read_index(root).manifests or []]
    while todo:
        digest = todo.pop()
        if digest in seen:
            continue
        seen.add(digest)
        try:
            doc = _read_document(root, digest)
        except OperationFailed:  # a layer, or junk: nothing below it to keep
            continue
        children = [*(doc.manifests or []), *doc.layers, *([doc.config] if doc.config else [])]
        todo += [c.digest for c in children]
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
