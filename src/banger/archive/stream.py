"""Reading a (compressed) tar stream with bounds: headers, names, members, bytes.

tarfile parses the stream (mode "r|", never extract/extractall); a TarInfo subclass refuses
an oversized GNU long name/link or pax header before tarfile reads it into memory, and a
counting reader ends the stream past `Limits.stream_bytes` (decompression bombs).
"""

from __future__ import annotations

import functools
import gzip
import lzma
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any, cast

import zstandard

from banger.archive.limits import ArchiveError, Limits, refuse

CHUNK = 1 << 20
MAX_HEADER_CHAIN = 8  # long name + long link + pax + global pax: a few, never thousands
_EXTENDED = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE,
             tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
_CHAIN = "_banger_header_chain"
_GLOBALS = "_banger_global_header_bytes"
SPARSE = "a GNU sparse member (not supported)"

# What a damaged, truncated or wrongly compressed stream raises while it is parsed.
CORRUPT: tuple[type[BaseException], ...] = (
    tarfile.TarError, zlib.error, lzma.LZMAError, gzip.BadGzipFile, EOFError,
    zstandard.ZstdError,
)


class _Prefixed:
    """A reader that first returns bytes already peeked, then the rest of `src`."""

    def __init__(self, head: bytes, src: IO[bytes]) -> None:
        self.head, self.src = head, src

    def read(self, size: int = -1) -> bytes:
        if not self.head:
            return self.src.read(size)
        if size < 0:
            data, self.head = self.head + self.src.read(), b""
            return data
        data, self.head = self.head[:size], self.head[size:]
        return data if len(data) == size else data + self.src.read(size - len(data))


def decompressed(src: IO[bytes]) -> IO[bytes]:
    """A reader of `src` decompressed by its magic bytes (gzip, zstd, xz) or as is.

    Works on pipes: nothing is seeked.
    """
    head = src.read(6)
    raw = cast(IO[bytes], _Prefixed(head, src))
    if head[:2] == b"\x1f\x8b":
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return cast(IO[bytes], zstandard.ZstdDecompressor().stream_reader(raw, read_size=CHUNK))
    if head == b"\xfd7zXZ\x00":
        return cast(IO[bytes], lzma.LZMAFile(raw))
    return raw


class _Counted:
    """Counts the decompressed bytes tarfile reads; past the cap the stream is refused."""

    def __init__(self, src: IO[bytes], cap: int, origin: str) -> None:
        self.src, self.cap, self.origin, self.count = src, cap, origin, 0

    def read(self, size: int = -1) -> bytes:
        data = self.src.read(size)
        self.count += len(data)
        if self.count > self.cap:
            raise ArchiveError(f"{self.origin}: unpacks to more than {self.cap} bytes; "
                               "refusing it (a decompression bomb or the wrong file)")
        return data


class _HeaderRefused(Exception):
    """Raised inside tarfile's header parser; read_tar adds the archive's name."""


@functools.lru_cache(maxsize=16)
def _bounded_info(header_bytes: int) -> type[tarfile.TarInfo]:
    class BoundedInfo(tarfile.TarInfo):
        def _proc_member(self, tar: tarfile.TarFile) -> Any:
            chain = getattr(tar, _CHAIN, 0) + 1 if self.type in _EXTENDED else 0
            setattr(tar, _CHAIN, chain)
            if chain > MAX_HEADER_CHAIN:
                raise _HeaderRefused(f"more than {MAX_HEADER_CHAIN} extended headers in a row")
            if self.size < 0:  # base-256 sizes can be negative; tarfile takes them
                raise _HeaderRefused(f"a negative size ({self.size})")
            if self.type == tarfile.XGLTYPE:  # tarfile merges every global header into one dict
                total = getattr(tar, _GLOBALS, 0) + self.size
                setattr(tar, _GLOBALS, total)
                if total > header_bytes:
                    raise _HeaderRefused(f"global pax headers over {header_bytes} bytes in all")
            if chain and self.size > header_bytes:
                raise _HeaderRefused(f"a long-name or pax header of {self.size} bytes "
                                     f"(cap {header_bytes})")
            if self.type == tarfile.GNUTYPE_SPARSE:
                raise _HeaderRefused(SPARSE)
            return super()._proc_member(tar)  # type: ignore[misc]

        # PAX sparse maps: 1.0 reads a map of any length from the data; nothing banger
        # unpacks is sparse, so all three variants are refused.
        def _proc_gnusparse_00(self, *args: Any) -> None:
            raise _HeaderRefused(SPARSE)

        _proc_gnusparse_01 = _proc_gnusparse_10 = _proc_gnusparse_00

    return BoundedInfo


class TarReader:
    """Members of one tar stream, each checked against the limits before it is returned."""

    def __init__(self, tar: tarfile.TarFile, limits: Limits, origin: str) -> None:
        self.tar, self.limits, self.origin = tar, limits, origin
        self.count = 0

    def __iter__(self) -> Iterator[tarfile.TarInfo]:
        while (member := self.tar.next()) is not None:
            self.tar.members.clear()  # type: ignore[attr-defined]  # stream mode keeps every header
            self.check(member)
            yield member

    def check(self, m: tarfile.TarInfo) -> None:
        self.count += 1
        if self.count > self.limits.members:
            raise ArchiveError(f"{self.origin}: more than {self.limits.members} members; "
                               "refusing it")
        for text in (m.name, m.linkname):
            if len(text.encode("utf-8", "surrogatepass")) > self.limits.name_bytes:
                raise refuse(self.origin, text, f"name longer than {self.limits.name_bytes} bytes")
        if m.size > self.limits.member_bytes:  # negative sizes never get here (_proc_member)
            raise refuse(self.origin, m.name, f"{m.size} bytes, over the cap of "
                         f"{self.limits.member_bytes}")

    def data(self, m: tarfile.TarInfo) -> IO[bytes]:
        src = self.tar.extractfile(m)
        if src is None:
            raise refuse(self.origin, m.name, "regular file without data")
        return src


@contextmanager
def read_tar(src: IO[bytes], limits: Limits, origin: str, *,
             decompress: bool = True) -> Iterator[TarReader]:
    """Open `src` (compressed or not) as a bounded tar stream; corrupt streams -> ArchiveError."""
    try:
        stream = decompressed(src) if decompress else src
        counted = cast(IO[bytes], _Counted(stream, limits.stream_bytes, origin))
        with tarfile.open(fileobj=counted, mode="r|",
                          tarinfo=_bounded_info(limits.header_bytes)) as tar:
            yield TarReader(tar, limits, origin)
    except _HeaderRefused as exc:
        raise ArchiveError(f"{origin}: {exc}; refusing it") from exc
    except CORRUPT as exc:
        raise ArchiveError(f"{origin} is not a valid tar archive or is truncated "
                           f"({type(exc).__name__}); re-download it") from exc


__all__ = ["CORRUPT", "TarReader", "decompressed", "read_tar"]
