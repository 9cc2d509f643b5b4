"""Unpack .deb files in pure Python (ar + data.tar.{xz,zst,gz}) with strict member filtering.

No dpkg needed, so this works on non-Debian hosts. The tar extractor here is also used for
other downloaded archives (kernel bundles): it refuses absolute names, `..`, devices, fifos
and links that would point outside the destination.
"""

from __future__ import annotations

import gzip
import io
import lzma
import os
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO, cast

import zstandard

from banger.errors import OperationFailed

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

AR_MAGIC = b"!<arch>\n"
AR_HEADER = 60
COPY_CHUNK = 1 << 20

# What a damaged or truncated compressed tar stream raises.
CORRUPT = (tarfile.TarError, lzma.LZMAError, zlib.error, gzip.BadGzipFile, EOFError,
           zstandard.ZstdError)

# Which members to extract: called with the normalised member name ("boot/vmlinuz-...").
Selector = Callable[[str], bool]


@dataclass(frozen=True)
class ArMember:
    name: str
    offset: int  # where the member's data starts in the file
    size: int


def read_ar_members(fh: BinaryIO, origin: str) -> list[ArMember]:
    """List the members of a Unix ar archive (the .deb container)."""
    if fh.read(len(AR_MAGIC)) != AR_MAGIC:
        raise OperationFailed(f"{origin} is not a .deb (no ar header); delete it and re-download")
    members: list[ArMember] = []
    while header := fh.read(AR_HEADER):
        if len(header) < AR_HEADER or header[58:60] != b"`\n":
            raise OperationFailed(f"{origin} is a truncated or corrupt .deb; re-download it")
        name = header[0:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError as exc:
            raise OperationFailed(f"{origin}: bad ar member size for {name!r}") from exc
        members.append(ArMember(name, fh.tell(), size))
        fh.seek(size + (size & 1), os.SEEK_CUR)  # ar pads members to even offsets
    return members


class _Window(io.RawIOBase):
    """A read-only view of one ar member, so tar can stream it without copying."""

    def __init__(self, fh: BinaryIO, member: ArMember) -> None:
        super().__init__()
        self._fh = fh
        self._left = member.size
        fh.seek(member.offset)

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self._fh.read(min(len(view), self._left))
        view[: len(data)] = data
        self._left -= len(data)
        return len(data)

    def readable(self) -> bool:
        return True


def _decompressor(name: str, window: _Window, origin: str) -> IO[bytes]:
    raw = cast(BinaryIO, io.BufferedReader(window, COPY_CHUNK))
    if name.endswith(".xz"):
        return cast(IO[bytes], lzma.open(raw, "rb"))
    if name.endswith(".gz"):
        return cast(IO[bytes], gzip.open(raw, "rb"))
    if name.endswith(".zst"):
        return cast(IO[bytes], zstandard.ZstdDecompressor().stream_reader(raw))
    if name.endswith(".tar"):
        return raw
    raise OperationFailed(f"{origin}: unsupported compression for member {name}")


@contextmanager
def open_deb_tar(deb: Path, part: str = "data") -> Iterator[tarfile.TarFile]:
    """Open the data (or control) tarball of a .deb as a streaming TarFile."""
    origin = str(deb)
    with deb.open("rb") as fh:
        members = read_ar_members(fh, origin)
        found = [m for m in members if m.name.startswith(f"{part}.tar")]
        if not found:
            raise OperationFailed(f"{origin} has no {part}.tar member; is it a real .deb?")
        stream = _decompressor(found[0].name, _Window(fh, found[0]), origin)
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                yield tar
        except CORRUPT as exc:
            msg = f"{origin} is corrupt ({exc}); delete it and re-download"
            raise OperationFailed(msg) from exc


def member_name(raw: str) -> str:
    """Normalise a tar member name ('./usr/bin' -> 'usr/bin'); '' for the root entry."""
    name = raw
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/") if name not in (".", "") else ""


def _bad_name(name: str) -> str | None:
    if name.startswith("/"):
        return "absolute path"
    if ".." in name.split("/"):
        return "'..' component"
    if "\x00" in name:
        return "NUL in name"
    return None


def _within(root: Path, path: str) -> bool:
    real_root = os.path.realpath(root)
    return os.path.commonpath([real_root, os.path.realpath(path)]) == real_root


class _Extractor:
    """Writes accepted tar members under `dest`, refusing anything that could escape it."""

    def __init__(self, dest: Path, origin: str, allow_links: bool) -> None:
        self.dest = dest
        self.origin = origin
        self.allow_links = allow_links
        self.written: list[str] = []

    def refuse(self, name: str, why: str) -> OperationFailed:
        msg = f"{self.origin}: refusing member {name!r} ({why}); the archive is unsafe"
        return OperationFailed(msg)

    def target(self, name: str) -> Path:
        path = self.dest / name
        parent = path.parent
        if not _within(self.dest, str(parent)):
            raise self.refuse(name, "its directory resolves outside the destination")
        return path

    def add(self, tar: tarfile.TarFile, info: tarfile.TarInfo, name: str) -> None:
        why = _bad_name(info.name)
        if why:
            raise self.refuse(info.name, why)
        if info.isdir():
            self.mkdir(name, info)
        elif info.isreg():
            self.file(tar, info, name)
        elif info.issym() or info.islnk():
            self.link(info, name)
        else:
            raise self.refuse(info.name, "device, fifo or other special file")
        self.written.append(name)

    def mkdir(self, name: str, info: tarfile.TarInfo) -> None:
        if not name:
            return
        path = self.target(name)
        if path.is_symlink():
            raise self.refuse(name, "directory would replace a symlink")
        path.mkdir(parents=True, exist_ok=True)
        path.chmod((info.mode & 0o777) | 0o700)  # keep it writable so we can fill it

    def _prepare(self, name: str) -> Path:
        path = self.target(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not _within(self.dest, str(path.parent)):
            raise self.refuse(name, "its directory resolves outside the destination")
        if path.is_symlink() or path.is_file():
            path.unlink()
        return path

    def file(self, tar: tarfile.TarFile, info: tarfile.TarInfo, name: str) -> None:
        path = self._prepare(name)
        src = tar.extractfile(info)
        if src is None:
            raise self.refuse(name, "unreadable regular file")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        fd = os.open(path, flags, 0o600)
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(COPY_CHUNK):
                out.write(chunk)
        os.chmod(path, stat.S_IMODE(info.mode) & 0o777)  # drop setuid/setgid/sticky bits
        os.utime(path, (info.mtime, info.mtime))

    def link(self, info: tarfile.TarInfo, name: str) -> None:
        if not self.allow_links:
            raise self.refuse(name, "links are not allowed in this archive")
        path = self._prepare(name)
        if info.issym():
            where = os.path.normpath(os.path.join(os.path.realpath(path.parent), info.linkname))
            if info.linkname.startswith("/") or not _within(self.dest, where):
                raise self.refuse(name, f"symlink to {info.linkname!r} escapes the destination")
            os.symlink(info.linkname, path)
            return
        source = member_name(info.linkname)
        if _bad_name(source) or source not in self.written:
            raise self.refuse(name, f"hard link to {info.linkname!r} outside the extracted set")
        os.link(self.dest / source, path, follow_symlinks=False)


def extract_tar(
    tar: tarfile.TarFile,
    dest: Path,
    *,
    select: Selector | None = None,
    allow_links: bool = True,
    origin: str = "archive",
) -> list[str]:
    """Extract (selected) members of a streaming tar into dest; return the names written."""
    dest.mkdir(parents=True, exist_ok=True)
    ex = _Extractor(dest, origin, allow_links)
    for info in tar:
        name = member_name(info.name)
        if select is not None and not select(name):
            continue
        ex.add(tar, info, name)
    return ex.written


def extract_deb(deb: Path, dest: Path, *, select: Selector | None = None) -> list[str]:
    """Unpack a .deb's data (or only the selected members) into dest; return names written."""
    with open_deb_tar(deb) as tar:
        return extract_tar(tar, dest, select=select, origin=str(deb))


def deb_members(deb: Path) -> list[str]:
    """Names of the files in a .deb's data tarball (normalised, no leading './')."""
    with open_deb_tar(deb) as tar:
        return [n for info in tar if (n := member_name(info.name))]


def deb_control(deb: Path) -> dict[str, str]:
    """The fields of a .deb's control file (Package, Version, Depends, ...)."""
    with open_deb_tar(deb, "control") as tar:
        for info in tar:
            if member_name(info.name) == "control" and info.isreg():
                src = tar.extractfile(info)
                text = src.read().decode("utf-8", "replace") if src else ""
                return parse_control(text)
    raise OperationFailed(f"{deb} has no control file; is it a real .deb?")


def parse_control(text: str) -> dict[str, str]:
    """Parse one deb822 stanza; continuation lines are joined with newlines."""
    fields: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip()
            fields[key] = value.strip()
    return fields


__all__ = [
    "ArMember",
    "Selector",
    "deb_control",
    "deb_members",
    "extract_deb",
    "extract_tar",
    "member_name",
    "open_deb_tar",
    "parse_control",
    "read_ar_members",
]
