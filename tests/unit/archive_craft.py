"""Hand-made hostile tar streams for the archive tests (built in memory, nothing downloaded)."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable

import zstandard

BLOCK = 512


def reg(name: str, data: bytes = b"x", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 1_600_000_000
    return info, data


def special(name: str, kind: bytes, linkname: str = "", mode: int = 0o755) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.mtime = kind, linkname, mode, 1_600_000_000
    return info


def sym(name: str, target: str) -> tarfile.TarInfo:
    return special(name, tarfile.SYMTYPE, target)


def hard(name: str, target: str) -> tarfile.TarInfo:
    return special(name, tarfile.LNKTYPE, target)


def dirent(name: str, mode: int = 0o755) -> tarfile.TarInfo:
    return special(name, tarfile.DIRTYPE, mode=mode)


def tar_of(entries: Iterable[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]],
           fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for e in entries:
            info, data = e if isinstance(e, tuple) else (e, b"")
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def header(name: str, size: int, kind: bytes) -> bytes:
    """One raw ustar/GNU header block (what tarfile would never write with this size)."""
    info = tarfile.TarInfo(name)
    info.size, info.type = size, kind
    return info.tobuf(format=tarfile.GNU_FORMAT)[:BLOCK]


def zstd_chunks(chunks: Iterable[bytes]) -> bytes:
    """Compress a long stream chunk by chunk (a bomb stays small in memory)."""
    out = io.BytesIO()
    with zstandard.ZstdCompressor(level=3).stream_writer(out, closefd=False) as w:
        for chunk in chunks:
            w.write(chunk)
    return out.getvalue()


def announced_longname(size: int, chunk: int = 1 << 20) -> bytes:
    """A zstd tar whose first header is a GNU long name of `size` bytes, all of them present."""
    def parts() -> Iterable[bytes]:
        yield header("././@LongLink", size, tarfile.GNUTYPE_LONGNAME)
        left = size
        while left:
            n = min(chunk, left)
            yield b"a" * n
            left -= n
        yield bytes(-size % BLOCK)
        yield tar_of([reg("manifest.json", b"{}")])
    return zstd_chunks(parts())


def zero_bomb(name: str, size: int, chunk: int = 1 << 20) -> bytes:
    """A zstd tar holding one regular file of `size` zero bytes (compresses ~1000x)."""
    def parts() -> Iterable[bytes]:
        yield header(name, size, tarfile.REGTYPE)
        left = size
        zeros = bytes(chunk)
        while left:
            n = min(chunk, left)
            yield zeros[:n]
            left -= n
        yield bytes(-size % BLOCK) + bytes(2 * BLOCK)
    return zstd_chunks(parts())
