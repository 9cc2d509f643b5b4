"""Image bundles: `<name>-<arch>-<sha256 prefix>.tar.zst` holding exactly rootfs.ext4 + manifest.json."""

from __future__ import annotations

import hashlib
import os
import secrets
import tarfile
import urllib.parse
from pathlib import Path
from typing import IO, Any, cast

import msgspec
import zstandard

from banger.archive import extract_exact
from banger.durable import create_fresh
from banger.errors import Conflict, InvalidArgument, OperationFailed
from banger.images.catalog import SHA256_RE, validate_name
from banger.images.manifest import (
    MANIFEST,
    MAX_MANIFEST_BYTES,
    ROOTFS,
    ImageManifest,
    decode_manifest,
    get_image,
    image_dir,
    read_manifest,
    sha256_file,
    staging_dir,
    write_manifest,
)
from banger.images.recipe import publish
from banger.images.staging import remove_tree
from banger.paths import Paths
from banger.progress import Progress, no_progress

MEMBERS = (MANIFEST, ROOTFS)  # manifest first: importers can reject a bad bundle early
MAX_ROOTFS_BYTES = 256 << 30  # written sparse: a bomb of zeros costs time, not disk
BUNDLE_MEMBERS = {MANIFEST: MAX_MANIFEST_BYTES, ROOTFS: MAX_ROOTFS_BYTES}
CHUNK = 256 * 1024
ZSTD_LEVEL = 3


class _HashingWriter:
    """A write-only file object that hashes everything passing through it."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()


class _HashingReader:
    """A read-only file object that hashes what is read (and counts it, for progress)."""

    def __init__(self, src: IO[bytes]) -> None:
        self.src = src
        self.hash = hashlib.sha256()
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self.src.read(size)
        self.hash.update(data)
        self.count += len(data)
        return data


def bundle_name(manifest: ImageManifest, sha256: str) -> str:
    return f"{manifest.name}-{manifest.arch}-{sha256[:12]}.tar.zst"


def _tarinfo(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, int(mtime), 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _write_tar(out: _HashingWriter, d: Path, manifest: ImageManifest) -> str:
    """Stream both members into `out`; returns the rootfs sha256 seen while streaming."""
    cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    rootfs_hash = ""
    with cctx.stream_writer(cast("IO[bytes]", out), closefd=False) as zw, tarfile.open(
        fileobj=zw, mode="w|", format=tarfile.PAX_FORMAT
    ) as tar:
        for member in MEMBERS:
            path = d / member
            st = path.stat()
            with path.open("rb") as src:
                reader = _HashingReader(src)
                tar.addfile(_tarinfo(member, st.st_size, st.st_mtime), reader)
            if member == ROOTFS:
                rootfs_hash = reader.hash.hexdigest()
    return rootfs_hash


def export_bundle(paths: Paths, name: str, out_dir: Path) -> Path:
    """Write the image as a content-addressed bundle in `out_dir`; returns its path."""
    manifest = get_image(paths, name)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{name}-{secrets.token_hex(4)}.tar.zst.part"
    try:
        with os.fdopen(create_fresh(tmp), "wb") as f:
            out = _HashingWriter(f)
            seen = _write_tar(out, image_dir(paths, name), manifest)
        if seen != manifest.sha256:
            raise OperationFailed(
                f"image {name!r} is corrupted: rootfs.ext4 does not match its manifest sha256; "
                "delete and rebuild it"
            )
        final = out_dir / bundle_name(manifest, out.hash.hexdigest())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


# ---- import ---------------------------------------------------------------------------


class _Progressing:
    """Reports extraction progress from the compressed bytes consumed."""

    def __init__(self, src: IO[bytes], total: int, progress: Progress) -> None:
        self.src, self.total, self.progress = src, max(total, 1), progress
        self.done = self.last = 0

    def read(self, size: int = -1) -> bytes:
        data = self.src.read(size)
        self.done += len(data)
        if self.done - self.last >= self.total // 50:
            self.last = self.done
            self.progress("extract", min(self.done / self.total, 1.0))
        return data


def extract_bundle(bundle: Path, dest: Path, progress: Progress = no_progress) -> None:
    """Extract exactly rootfs.ext4 + manifest.json into `dest`, refusing anything else."""
    with bundle.open("rb") as f:
        counted: Any = _Progressing(f, bundle.stat().st_size, progress)
        got = extract_exact(counted, BUNDLE_MEMBERS, into=dest, origin=bundle.name,
                            required=MEMBERS)
    try:
        for name, path in got.files.items():
            os.rename(path, dest / name)
    finally:
        got.remove()


def check_sha256(sha256: str) -> str:
    sha = sha256.strip().lower()
    if not SHA256_RE.match(sha):
        raise InvalidArgument(f"--sha256 {sha256!r} is not 64 hex digits")
    return sha


def is_url(source: Path | str) -> bool:
    return isinstance(source, str) and source.startswith(("http://", "https://"))


def _local_path(source: Path | str) -> Path:
    if isinstance(source, str) and source.startswith("file://"):
        parsed = urllib.parse.urlsplit(source)
        if parsed.netloc not in ("", "localhost"):
            raise InvalidArgument(f"{source}: file URLs must name a local path")
        return Path(urllib.parse.unquote(parsed.path))
    return Path(source)


async def _fetch(source: Path | str, sha: str, dest: Path, progress: Progress) -> Path:
    """Put the verified bundle at `dest` (URL) or return the verified local file."""
    if is_url(source):
        from banger.download import download  # lazy: only URL imports need HTTP

        progress("download", 0.0, str(source))
        await download(str(source), dest, sha256=sha, progress=progress)
        return dest
    path = _local_path(source)
    if not path.is_file():
        raise InvalidArgument(f"bundle {path} does not exist or is not a file")
    progress("verify", 0.0, path.name)
    got = sha256_file(path)
    if got != sha:
        raise OperationFailed(f"sha256 mismatch for {path.name}: expected {sha}, got {got}")
    return path


def _validate(stage: Path, origin: str, name: str | None, progress: Progress) -> ImageManifest:
    manifest = decode_manifest((stage / MANIFEST).read_bytes(), f"{origin} manifest.json")
    rootfs = stage / ROOTFS
    if rootfs.stat().st_size != manifest.size:
        raise OperationFailed(f"{origin}: rootfs.ext4 size does not match its manifest")
    progress("checksum", 0.0)
    if sha256_file(rootfs) != manifest.sha256:
        raise OperationFailed(f"{origin}: rootfs.ext4 does not match its manifest sha256")
    progress("checksum", 1.0)
    if name and name != manifest.name:
        manifest = msgspec.structs.replace(manifest, name=name)
        write_manifest(stage / MANIFEST, manifest)
    return manifest


async def import_bundle(
    paths: Paths,
    source: Path | str,
    sha256: str,
    progress: Progress = no_progress,
    name: str | None = None,
) -> ImageManifest:
    """Verify, extract and register a bundle (path, file:// or http(s) URL) as images/<name>/."""
    sha = check_sha256(sha256)
    if name is not None:
        validate_name(name)
        _refuse_existing(paths, name)
    origin = str(source).rsplit("/", 1)[-1]
    stage = staging_dir(paths, name or "import")
    stage.mkdir()
    try:
        bundle = await _fetch(source, sha, stage / ".bundle.tar.zst", progress)
        extract_bundle(bundle, stage, progress)
        (stage / ".bundle.tar.zst").unlink(missing_ok=True)
        manifest = _validate(stage, origin, name, progress)
        _refuse_existing(paths, manifest.name)
        publish(stage, image_dir(paths, manifest.name))
    except BaseException:
        remove_tree(stage)
        raise
    progress("done", 1.0, manifest.name)
    return manifest


def _refuse_existing(paths: Paths, name: str) -> None:
    if (image_dir(paths, name) / MANIFEST).exists():
        existing = read_manifest(image_dir(paths, name) / MANIFEST)
        raise Conflict(
            f"image {name!r} already exists (sha256 {existing.sha256[:12]}); "
            "delete it first or import with another name"
        )


__all__ = [
    "bundle_name",
    "check_sha256",
    "export_bundle",
    "extract_bundle",
    "import_bundle",
]
