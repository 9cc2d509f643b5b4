"""What an archive may hold (typed caps) and the one error every refusal raises."""

from __future__ import annotations

from typing import Annotated

import msgspec

from banger.errors import OperationFailed
from banger.textsafe import one_line

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
NAME_IN_ERRORS = 120  # a hostile name is cut to this many characters in messages
MAX_COMPONENT_BYTES = 255  # NAME_MAX on Linux file systems

Count = Annotated[int, msgspec.Meta(ge=1, le=10_000_000)]
Bytes = Annotated[int, msgspec.Meta(ge=1, le=1 << 44)]
HeaderBytes = Annotated[int, msgspec.Meta(ge=512, le=16 * MIB)]


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Caps checked while an archive streams by, before anything is written or allocated.

    member_bytes and total_bytes count the (logical) sizes of regular files written;
    stream_bytes counts every decompressed tar byte read, skipped members included (a bomb
    made of members nobody selects still ends); header_bytes caps one GNU long name/link or
    pax header, refused before tarfile reads it into memory.
    """

    members: Count = 1_000_000
    member_bytes: Bytes = 8 * GIB
    total_bytes: Bytes = 32 * GIB
    stream_bytes: Bytes = 64 * GIB
    name_bytes: Annotated[int, msgspec.Meta(ge=1, le=64 * KIB)] = 4 * KIB  # PATH_MAX
    header_bytes: HeaderBytes = 64 * KIB

    def __post_init__(self) -> None:
        # Structs are not validated on construction; a zero or negative cap is a bug.
        for field in self.__struct_fields__:
            if getattr(self, field) < 1:
                raise ValueError(f"Limits.{field} must be positive")


class ArchiveError(OperationFailed):
    """An archive holds something banger refuses to unpack, or is corrupt or too big."""


def shown(name: str) -> str:
    """A hostile member name as it may appear in one error line: cleaned and cut."""
    return repr(one_line(name, NAME_IN_ERRORS))


def refuse(origin: str, name: str, why: str) -> ArchiveError:
    return ArchiveError(f"{origin}: refusing member {shown(name)} ({why}); "
                        "the archive is unsafe or corrupt, do not use it")


__all__ = ["GIB", "KIB", "MIB", "ArchiveError", "Limits", "refuse", "shown"]
