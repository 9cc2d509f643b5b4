"""Registry access through skopeo: resolve a ref to its linux/amd64 manifest, copy into the cache."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from banger.errors import NotFound, OperationFailed
from banger.images.oci import layout
from banger.images.oci.ref import OciRef
from banger.progress import Progress
from banger.runner import Result, arun, which

OS, ARCH = "linux", "amd64"
INSPECT_TIMEOUT = 120.0
COPY_TIMEOUT = 3600.0
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class Resolved:
    layers: dict[str, int]  # digest -> compressed size, config included
    platform_digest: str | None  # the linux/amd64 entry when the ref is a manifest list

    @property
    def total_bytes(self) -> int:
        return sum(self.layers.values())


def _tls_args(ref: OciRef, insecure: list[str], flag: str) -> list[str]:
    return [f"{flag}=false"] if ref.registry in insecure else []


def _skopeo() -> str:
    tool = which("skopeo")
    if tool is None:
        raise OperationFailed("OCI pulls need skopeo; install it (apt-get install skopeo)")
    return tool


def _explain(ref: OciRef, res: Result) -> OperationFailed | NotFound:
    err = res.stderr.strip().splitlines()
    tail = err[-1] if err else f"exit {res.returncode}"
    tail = tail.removeprefix("time=").split('msg="', 1)[-1].rstrip('"')
    if "manifest unknown" in tail or "not found" in tail.lower():
        return NotFound(f"{ref.canonical} not found in the registry: {tail}")
    if "unauthorized" in tail.lower() or "authentication required" in tail.lower():
        return OperationFailed(f"{ref.registry} refused access to {ref.canonical}; log in with "
                               f"`skopeo login {ref.registry}` (or docker login) and retry")
    if "http response to https client" in tail.lower():
        return OperationFailed(f"{ref.registry} speaks plain HTTP; add it to "
                               "oci_insecure_registries in config.toml")
    return OperationFailed(f"cannot pull {ref.canonical}: {tail}")


async def _inspect_raw(ref: OciRef, target: str, insecure: list[str]) -> dict[str, Any]:
    argv = [_skopeo(), "inspect", "--raw", *_tls_args(ref, insecure, "--tls-verify"), target]
    res = await arun(argv, check=False, timeout=INSPECT_TIMEOUT, what="skopeo inspect")
    if not res.ok:
        raise _explain(ref, res)
    try:
        doc: dict[str, Any] = json.loads(res.stdout)
    except ValueError as exc:
        raise OperationFailed(f"{ref.canonical}: the registry sent a manifest that is not JSON") \
            from exc
    return doc


def _pick_platform(ref: OciRef, index: dict[str, Any]) -> str:
    for desc in index.get("manifests", []):
        plat = desc.get("platform", {})
        if plat.get("os") == OS and plat.get("architecture") == ARCH:
            return str(desc["digest"])
    found = sorted({f"{d.get('platform', {}).get('os')}/{d.get('platform', {}).get('architecture')}"
                    for d in index.get("manifests", [])})
    raise NotFound(f"{ref.canonical} has no {OS}/{ARCH} image (it has {', '.join(found)})")


async def resolve(ref: OciRef, insecure: list[str]) -> Resolved:
    """The linux/amd64 image's blobs and sizes (manifest lists are followed)."""
    doc = await _inspect_raw(ref, ref.transport, insecure)
    platform_digest = None
    if "manifests" in doc:
        platform_digest = _pick_platform(ref, doc)
        doc = await _inspect_raw(ref, f"docker://{ref.domain}/{ref.path}@{platform_digest}",
                                 insecure)
    blobs = [*doc.get("layers", []), doc.get("config", {})]
    return Resolved({str(d["digest"]): int(d.get("size", 0)) for d in blobs if "digest" in d},
                    platform_digest)


def missing_bytes(root: Path, resolved: Resolved) -> int:
    """Bytes skopeo still has to fetch: blobs already in the cache are skipped."""
    return sum(size for digest, size in resolved.layers.items()
               if not layout.blob_path(root, digest).exists())


async def _report_download(root: Path, start: int, total: int, progress: Progress) -> None:
    while True:
        await asyncio.sleep(POLL_SECONDS)
        done = max(0, layout.tree_bytes(root) - start)
        if total:
            progress("download", min(done / total, 0.99), f"{done >> 20} of {total >> 20} MiB")


async def copy(ref: OciRef, root: Path, insecure: list[str], need_bytes: int,
               progress: Progress) -> None:
    """`skopeo copy docker://REF oci:CACHE:TAG` for linux/amd64; the caller holds the lock."""
    argv = [_skopeo(), "copy", "--quiet", "--override-os", OS, "--override-arch", ARCH,
            *_tls_args(ref, insecure, "--src-tls-verify"),
            ref.transport, f"oci:{root}:{ref.cache_tag()}"]
    progress("download", 0.0, f"{need_bytes >> 20} MiB to fetch" if need_bytes
             else "all layers cached")
    reporter = asyncio.ensure_future(
        _report_download(root, layout.tree_bytes(root), need_bytes, progress))
    try:
        res = await arun(argv, check=False, timeout=COPY_TIMEOUT, what="skopeo copy")
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
    if not res.ok:
        raise _explain(ref, res)
    progress("download", 1.0)


__all__ = ["Resolved", "copy", "missing_bytes", "resolve"]
