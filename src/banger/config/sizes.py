"""Size strings: K/M/G/T and KiB/MiB/GiB/TiB (binary), bare numbers are MiB."""

from __future__ import annotations

import re

from banger.errors import InvalidArgument
from banger.numbers import decimal_parts, shown

_UNITS = {"": 1024**2, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
# ASCII only: `\d` would also take '²' and '٣'; the number itself is checked by decimal_parts.
_SIZE_RE = re.compile(r"([0-9.]{1,32})\s*([KMGT]?)(I?B)?", re.IGNORECASE | re.ASCII)
MAX_SIZE = 1024**5  # 1024T: far above any disk or memory; the daemon applies the real limits
SIZE_HELP = "a size such as 512M, 2G, 1.5GiB or a bare number of MiB"


def parse_size_bytes(value: str | int, *, what: str = "size") -> int:
    """Parse a size into bytes; bare numbers (and ints) are MiB."""
    if isinstance(value, bool):
        raise InvalidArgument(f"invalid {what} {value!r}: expected {SIZE_HELP}")
    if isinstance(value, int):
        return _bounded(value * 1024**2, str(value), what)
    m = _SIZE_RE.fullmatch(value.strip())
    parts = decimal_parts(m.group(1)) if m else None
    if m is None or parts is None:
        raise InvalidArgument(f"invalid {what} {shown(value)}: expected {SIZE_HELP}")
    unit, suffix = m.group(2).upper(), (m.group(3) or "").upper()
    if not unit and suffix == "B":
        unit = "B"
    elif not unit and suffix == "IB":
        raise InvalidArgument(f"invalid {what} {shown(value)}: expected {SIZE_HELP}")
    whole, fraction = parts
    scale = _UNITS[unit]
    size = whole * scale + (int(fraction) * scale // 10 ** len(fraction) if fraction else 0)
    return _bounded(size, value, what)


def _bounded(size: int, value: str, what: str) -> int:
    if size <= 0:
        raise InvalidArgument(f"invalid {what} {shown(value)}: must be positive")
    if size > MAX_SIZE:
        raise InvalidArgument(f"invalid {what} {shown(value)}: the most is 1024T")
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
