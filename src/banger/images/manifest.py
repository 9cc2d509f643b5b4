"""Registered images: `images/<name>/{rootfs.ext4,manifest.json}`; typed manifest, list, delete."""

from __future__ import annotations

import os
import platform
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from banger.download import sha256_file
from banger.errors import InvalidArgument, NotFound
from banger.images.catalog import SHA256_RE, unknown_name_message, validate_name
from banger.paths import Paths

ROOTFS = "rootfs.ext4"
MANIFEST = "manifest.json"
FORMAT = 1
MAX_MANIFEST_BYTES = 1 << 20


class ImageManifest(msgspec.Struct, frozen=True, kw_only=True):
    """What an image is; the rootfs sha256 and size let anyone re-verify it."""

    name: str
    distro: str
    arch: str
    kernel: str
    sha256: str
    size: int
    built: str
    format: int = FORMAT
    release: str = ""
    description: str = ""
    packages: list[str] = []
    installed: list[str] = []
    systemd: bool = False
    guest_files: str = ""
    source: str = ""

    def has_package(self, name: str) -> bool | None:
        """Whether the image has this package; None when its package list is unknown (OCI)."""
        if not self.installed:
            return None
        return any(entry.split("=")[0] == name for entry in self.installed)


def debian_arch() -> str:
    """The host architecture in Debian's spelling (images are built for the host)."""
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def utc_now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def decode_manifest(data: bytes, origin: str) -> ImageManifest:
    """Parse and sanity-check a manifest; InvalidArgument names what is wrong."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise InvalidArgument(f"{origin}: manifest is larger than 1 MiB")
    try:
        m = msgspec.json.decode(data, type=ImageManifest)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise InvalidArgument(f"{origin}: invalid manifest: {exc}") from exc
    validate_name(m.name)
    if not SHA256_RE.fullmatch(m.sha256):
        raise InvalidArgument(f"{origin}: manifest sha256 is not 64 lowercase hex digits")
    if m.size <= 0:
        raise InvalidArgument(f"{origin}: manifest size must be positive")
    if m.format > FORMAT:
        raise InvalidArgument(f"{origin}: manifest format {m.format} is newer; upgrade banger")
    return m


def read_manifest(path: Path) -> ImageManifest:
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise NotFound(f"{path} is missing") from exc
    return decode_manifest(data, str(path))


def write_manifest(path: Path, manifest: ImageManifest) -> None:
    """Write atomically: a reader sees the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(manifest), indent=2) + b"\n")
    os.replace(tmp, path)


def image_dir(paths: Paths, name: str) -> Path:
    return paths.images_dir / validate_name(name)


def staging_dir(paths: Paths, name: str) -> Path:
    """A fresh, unique staging path next to the final one (same filesystem: rename works)."""
    paths.images_dir.mkdir(parents=True, exist_ok=True)
    return paths.images_dir / f".staging-{validate_name(name)}-{secrets.token_hex(4)}"


def list_images(paths: Paths) -> list[ImageManifest]:
    """Registered images by name; half-made or broken directories are skipped."""
    if not paths.images_dir.is_dir():
        return []
    found: list[ImageManifest] = []
    for d in sorted(paths.images_dir.iterdir()):
        if d.name.startswith(".") or not (d / ROOTFS).is_file():
            continue
        try:
            found.append(read_manifest(d / MANIFEST))
        except (InvalidArgument, NotFound):
            continue
    return found


def get_image(paths: Paths, name: str) -> ImageManifest:
    d = image_dir(paths, name)
    if not (d / MANIFEST).is_file() or not (d / ROOTFS).is_file():
        known = [m.name for m in list_images(paths)]
        raise NotFound(unknown_name_message("image", name, known))
    return read_manifest(d / MANIFEST)


def delete_image(paths: Paths, name: str) -> None:
    """Remove a registered image; the caller has checked that no VM uses it."""
    d = image_dir(paths, name)
    if not d.is_dir():
        raise NotFound(f"image {name!r} is not registered; `banger image list` shows them")
    # Rename first so the image vanishes atomically even if the removal is interrupted.
    doomed = paths.images_dir / f".deleting-{name}-{secrets.token_hex(4)}"
    os.rename(d, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


__all__ = [
    "MANIFEST",
    "ROOTFS",
    "ImageManifest",
    "debian_arch",
    "decode_manifest",
    "delete_image",
    "get_image",
    "image_dir",
    "list_images",
    "read_manifest",
    "sha256_file",
    "staging_dir",
    "utc_now",
    "write_manifest",
]
