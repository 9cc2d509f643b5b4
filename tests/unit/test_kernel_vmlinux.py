"""bzImage -> ELF vmlinux for every payload compression the kernel build can use."""

from __future__ import annotations

import gzip
import lzma
import struct
from collections.abc import Callable

import lz4.block  # type: ignore[import-untyped]
import pytest
import zstandard

from banger.errors import OperationFailed
from banger.kernels.vmlinux import extract_vmlinux, header_payload, kernel_version

ELF = b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 64


def lz4_legacy(data: bytes, block: int = 8 << 20) -> bytes:
    out = bytearray(b"\x02\x21\x4c\x18")
    for i in range(0, len(data), block):
        chunk = lz4.block.compress(data[i : i + block], store_size=False)
        out += struct.pack("<I", len(chunk)) + chunk
    return bytes(out)


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "lz4": lz4_legacy,
    "gzip": gzip.compress,
    "xz": lambda d: lzma.compress(d, format=lzma.FORMAT_XZ),
    "zstd": lambda d: zstandard.ZstdCompressor().compress(d),
}


def bzimage(payload: bytes, version: str = "6.1.0-99-test (nobody@example) #1") -> bytes:
    """A minimal bzImage: one setup sector, boot header, version string, payload."""
    payload = payload + struct.pack("<I", len(ELF))  # the kernel build appends the size
    img = bytearray(1024)
    img[0x1F1] = 1
    img[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", img, 0x206, 0x020F)
    struct.pack_into("<H", img, 0x20E, 0x100)  # version string at 0x100 + 0x200
    img[0x300 : 0x300 + len(version)] = version.encode()
    struct.pack_into("<II", img, 0x248, 0, len(payload))
    return bytes(img) + payload + b"\x00" * 64


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_extracts_each_compression(kind: str) -> None:
    image = bzimage(COMPRESSORS[kind](ELF))
    assert header_payload(image) is not None
    assert extract_vmlinux(image) == ELF


def test_lz4_multi_block() -> None:
    big = ELF + bytes(9 << 20)
    assert extract_vmlinux(bzimage(lz4_legacy(big))) == big


def test_scan_fallback_without_header() -> None:
    assert extract_vmlinux(b"junk" * 100 + gzip.compress(ELF)) == ELF


def test_elf_input_is_returned_as_is() -> None:
    assert extract_vmlinux(ELF) == ELF


def test_non_elf_payload_is_an_error() -> None:
    with pytest.raises(OperationFailed, match="cannot find an ELF vmlinux"):
        extract_vmlinux(bzimage(gzip.compress(b"not an elf" * 100)))


def test_kernel_version_from_header() -> None:
    assert kernel_version(bzimage(b"")) == "6.1.0-99-test"
    assert kernel_version(b"nothing") is None
