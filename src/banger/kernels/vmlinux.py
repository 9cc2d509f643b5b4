"""Extract the ELF vmlinux from a bzImage (what the kernel's scripts/extract-vmlinux does).

Firecracker boots only an uncompressed ELF kernel. The bzImage header says where the
compressed payload is; we decompress it (LZ4 legacy, gzip, xz or zstd) and check for ELF.
"""

from __future__ import annotations

import lzma
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import lz4.block  # type: ignore[import-untyped]
import zstandard

from banger.errors import OperationFailed

ELF_MAGIC = b"\x7fELF"
LZ4_LEGACY_MAGIC = b"\x02\x21\x4c\x18"
LZ4_LEGACY_BLOCK = 8 << 20  # the legacy frame's fixed maximum uncompressed block size
GZIP_MAGIC = b"\x1f\x8b\x08"
XZ_MAGIC = b"\xfd7zXZ\x00"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
HDR_MAGIC = b"HdrS"  # boot protocol header signature at offset 0x202


def _lz4_legacy(data: bytes) -> bytes:
    """Decode an LZ4 legacy frame; stops at the kernel's appended 4-byte size or the end."""
    if not data.startswith(LZ4_LEGACY_MAGIC):
        raise ValueError("not an LZ4 legacy frame")
    out: list[bytes] = []
    pos = 4
    while pos + 4 <= len(data):
        (chunk,) = struct.unpack_from("<I", data, pos)
        if data[pos : pos + 4] == LZ4_LEGACY_MAGIC:  # concatenated frames
            pos += 4
            continue
        if chunk == 0 or pos + 4 + chunk > len(data):
            break  # trailing size field or padding, not a block
        block = data[pos + 4 : pos + 4 + chunk]
        out.append(lz4.block.decompress(block, uncompressed_size=LZ4_LEGACY_BLOCK))
        pos += 4 + chunk
    return b"".join(out)


def _gzip(data: bytes) -> bytes:
    return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)  # ignores trailing bytes


def _xz(data: bytes) -> bytes:
    return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)


def _zstd(data: bytes) -> bytes:
    # decompressobj stops at the end of the frame; the kernel appends a size after it
    return bytes(zstandard.ZstdDecompressor().decompressobj().decompress(data))


DECODERS: list[tuple[bytes, Callable[[bytes], bytes]]] = [
    (LZ4_LEGACY_MAGIC, _lz4_legacy),
    (GZIP_MAGIC, _gzip),
    (XZ_MAGIC, _xz),
    (ZSTD_MAGIC, _zstd),
]


def header_payload(image: bytes) -> bytes | None:
    """The compressed payload the bzImage header points at (boot protocol >= 2.08)."""
    if len(image) < 0x250 or image[0x202:0x206] != HDR_MAGIC:
        return None
    setup_sects = image[0x1F1] or 4  # 0 means 4, per the boot protocol
    (version,) = struct.unpack_from("<H", image, 0x206)
    if version < 0x208:
        return None
    offset, length = struct.unpack_from("<II", image, 0x248)
    start = (setup_sects + 1) * 512 + offset
    if length == 0 or start + length > len(image):
        return None
    return image[start : start + length]


def kernel_version(image: bytes) -> str | None:
    """The version string the bzImage header points at ('6.1.0-28-cloud-amd64 ...')."""
    if len(image) < 0x210 or image[0x202:0x206] != HDR_MAGIC:
        return None
    (ptr,) = struct.unpack_from("<H", image, 0x20E)
    start = ptr + 0x200
    if not ptr or start >= len(image):
        return None
    text = image[start : image.find(b"\x00", start, start + 256)].decode("ascii", "replace")
    return text.split(" ", 1)[0] or None


def _try(decode: Callable[[bytes], bytes], data: bytes) -> bytes | None:
    try:
        out = decode(data)
    except (ValueError, RuntimeError, EOFError, zlib.error, lzma.LZMAError, zstandard.ZstdError):
        return None
    except Exception as exc:  # lz4.block.LZ4BlockError has no public base we can name
        if type(exc).__name__ != "LZ4BlockError":
            raise
        return None
    return out if out.startswith(ELF_MAGIC) else None


def _scan(image: bytes) -> bytes | None:
    """Fallback: try every compression magic in the file, like extract-vmlinux does."""
    for magic, decode in DECODERS:
        pos = image.find(magic)
        while pos != -1:
            out = _try(decode, image[pos:])
            if out is not None:
                return out
            pos = image.find(magic, pos + 1)
    return None


def extract_vmlinux(image: bytes, origin: str = "bzImage") -> bytes:
    """The uncompressed ELF kernel inside a bzImage (or the input if already ELF)."""
    if image.startswith(ELF_MAGIC):
        return image
    payload = header_payload(image)
    if payload is not None:
        for magic, decode in DECODERS:
            if payload.startswith(magic) and (out := _try(decode, payload)) is not None:
                return out
    out = _scan(image)
    if out is None:
        raise OperationFailed(
            f"cannot find an ELF vmlinux in {origin}: payload is not LZ4/gzip/xz/zstd; "
            "use a bundle that ships vmlinux"
        )
    return out


def write_vmlinux(bzimage: Path, dest: Path) -> None:
    """Extract bzimage's vmlinux into dest (written whole, then renamed)."""
    data = extract_vmlinux(bzimage.read_bytes(), str(bzimage))
    tmp = dest.with_suffix(dest.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(dest)


__all__ = ["extract_vmlinux", "header_payload", "kernel_version", "write_vmlinux"]
