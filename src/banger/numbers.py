"""Numbers typed by users: ASCII decimal only, bounded length, range-checked, one clear line.

`int()` and `str.isdigit()` are too lenient for input: they accept '²', '٣', '1_000' and
thousands of digits. Everything numeric a user types (flags, port mappings, sizes) goes
through here.
"""

from __future__ import annotations

import re

from banger.errors import InvalidArgument
from banger.textsafe import one_line

MAX_DIGITS = 18  # below 2**63, so every accepted value also fits the store's integers
_INTEGER = re.compile(f"[0-9]{{1,{MAX_DIGITS}}}", re.ASCII)
_DECIMAL = re.compile(f"([0-9]{{1,{MAX_DIGITS}}})(?:\\.([0-9]{{1,9}}))?", re.ASCII)


def shown(text: str) -> str:
    """The user's input quoted for an error line: one line, short."""
    quoted = repr(one_line(text, limit=24))
    return quoted if len(quoted) <= 48 else quoted[:45] + "…'"  # repr escapes grow 10x


def parse_int(text: str, *, what: str, low: int, high: int) -> int:
    """A whole number in low..high; anything else is one InvalidArgument line naming `what`."""
    if not _INTEGER.fullmatch(text.strip()):
        raise InvalidArgument(f"invalid {what} {shown(text)}: expected a whole number "
                              f"in {low}..{high}")
    value = int(text.strip())
    if not low <= value <= high:
        raise InvalidArgument(f"invalid {what} {value}: use {low}..{high}")
    return value


def decimal_parts(text: str) -> tuple[int, str] | None:
    """'12.5' -> (12, '5'); None unless text is ASCII digits with an optional short fraction."""
    match = _DECIMAL.fullmatch(text)
    if match is None:
        return None
    return int(match.group(1)), match.group(2) or ""


def parse_seconds(text: str, *, what: str, high: float) -> float:
    """A duration such as 20 or 2.5, in 0..high seconds."""
    parts = decimal_parts(text.strip())
    if parts is None:
        raise InvalidArgument(f"invalid {what} {shown(text)}: expected seconds such as 20 or 2.5")
    value = float(f"{parts[0]}.{parts[1] or 0}")
    if value > high:
        raise InvalidArgument(f"invalid {what} {text.strip()}: use 0..{high:g} seconds")
    return value
