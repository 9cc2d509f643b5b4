"""Unpack .deb files in pure Python (ar + data.tar.{xz,zst,gz}) with the one safe extractor.

No dpkg needed, so this works on non-Debian hosts. The tar goes through `banger.archive`:
absolute names, '.', '..', paths through symlinks, links leaving the destination, devices and
fifos are refused, and the package's size is capped (`DEB_LIMITS`).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO, cast

from banger.archive import GIB, MIB, Limits, TarReader, read_tar
from banger.archive.extract import extract
from banger.archive.names import split_name
from banger.errors import OperationFailed

if TYPE_CHECKING:
    import tarfile

    from _typeshed import WriteableBuffer

AR_MAGIC = b"!<arch>\n"
AR_HEADER = 60
COPY_CHUNK = 1 << 20
# A kernel package unpacks to ~500 MiB; nothing banger reads from a .deb comes close to this.
DEB_LIMITS = Limits(members=200_000, member_bytes=1 * GIB, total_bytes=4 * GIB,
                    stream_bytes=8 * GIB)
CONTROL_BYTES = 1 * MIB

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
        if size < 0:  # a negative size would seek backwards forever
            raise OperationFailed(f"{origin}: bad ar member size for {name!r}")
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


@contextmanager
def open_deb_tar(deb: Path, part: str = "data") -> Iterator[TarReader]:
    """The data (or control) tarball of a .deb as a bounded stream of members."""
    origin = str(deb)
    with deb.open("rb") as fh:
        found = _data_member(fh, origin, part)
        raw = cast(IO[bytes], io.BufferedReader(_Window(fh, found), COPY_CHUNK))
        with read_tar(raw, DEB_LIMITS, origin) as reader:
            yield reader


def member_name(raw: str, origin: str = "archive") -> str:
    """A member name as plain components ('./usr/bin' -> 'usr/bin'); '' for the root entry."""
    return "/".join(split_name(raw, origin))


def extract_tar(
    src: IO[bytes],
    dest: Path,
    *,
    select: Selector | None = None,
    allow_links: bool = True,
    origin: str = "archive",
    limits: Limits = DEB_LIMITS,
) -> list[str]:
    """Extract (selected) members of a (compressed) tar stream into dest; return names written."""

    def chosen(name: str, _m: tarfile.TarInfo) -> str | None:
        return name if select is None or select(name) else None

    return extract(src, dest, origin=origin, select=chosen, limits=limits,
                   links=allow_links).written


def extract_deb(deb: Path, dest: Path, *, select: Selector | None = None,
                allow_links: bool = True) -> list[str]:
    """Unpack a .deb's data (or only the selected members) into dest; return names written."""
    origin = str(deb)
    with deb.open("rb") as fh:
        data = _data_member(fh, origin, "data")
        raw = cast(IO[bytes], io.BufferedReader(_Window(fh, data), COPY_CHUNK))
        return extract_tar(raw, dest, select=select, allow_links=allow_links, origin=origin)


def _data_member(fh: BinaryIO, origin: str, part: str) -> ArMember:
    found = [m for m in read_ar_members(fh, origin) if m.name.startswith(f"{part}.tar")]
    if not found:
        raise OperationFailed(f"{origin} has no {part}.tar member; is it a real .deb?")
    return found[0]


def deb_members(deb: Path) -> list[str]:
    """Names of the files in a .deb's data tarball (normalised, no leading './')."""
    with open_deb_tar(deb) as reader:
        return [n for info in reader if (n := member_name(info.name, str(deb)))]


def deb_control(deb: Path) -> dict[str, str]:
    """The fields of a .deb's control file (Package, Version, Depends, ...)."""
    with open_deb_tar(deb, "control") as reader:
        for info in reader:
            if member_name(info.name, str(deb)) == "control" and info.isreg():
                if info.size > CONTROL_BYTES:
                    raise OperationFailed(f"{deb}: control file over 1 MiB; is it a real .deb?")
                text = reader.data(info).read().decode("utf-8", "replace")
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
    "DEB_LIMITS",
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
