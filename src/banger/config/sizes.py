"""Size strings: K/M/G/T and KiB/MiB/GiB/TiB (binary), bare numbers are MiB."""

from __future__ import annotations

import re

from banger.errors import InvalidArgument

_UNITS = {"": 1024**2, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(I?B)?\s*$", re.IGNORECASE)
SIZE_HELP = "a size such as 512M, 2G, 1.5GiB or a bare number of MiB"


def parse_size_bytes(value: str | int, *, what: str = "size") -> int:
    """Parse a size into bytes; bare numbers (and ints) are MiB."""
    if isinstance(value, bool):
        raise InvalidArgument(f"invalid {what} {value!r}: expected {SIZE_HELP}")
    if isinstance(value, int):
        if value <= 0:
            raise InvalidArgument(f"invalid {what} {value}: must be positive")
        return value * 1024**2
    m = _SIZE_RE.match(value)
    if not m:
        raise InvalidArgument(f"invalid {what} {value!r}: expected {SIZE_HELP}")
    number, unit, suffix = m.group(1), m.group(2).upper(), (m.group(3) or "").upper()
    if not unit and suffix == "B":
        unit = "B"
    elif not unit and suffix == "IB":
        raise InvalidArgument(f"invalid {what} {value!r}: expected {SIZE_HELP}")
    size = int(float(number) * _UNITS[unit])
    if size <= 0:
        raise InvalidArgument(f"invalid {what} {value!r}: must be positive")
    return size


def parse_size_mib(value: str | int, *, what: str = "size") -> int:
    """Parse a size and return whole MiB (rounded up)."""
    size = parse_size_bytes(value, what=what)
    return -(-size // 1024**2)


def format_size_mib(mib: int) -> str:
    """Human form used in specs: whole GiB as `8G`, otherwise `1536M`."""
    if mib % 1024 == 0:
        return f"{mib // 1024}G"
    return f"{mib}M"
