"""What the image and kernel catalogs share: strict JSON decoding and close-name suggestions."""

from __future__ import annotations

import difflib
from typing import TypeVar

import msgspec

from banger.errors import InvalidArgument

T = TypeVar("T")


def decode(data: bytes, kind: type[T], origin: str) -> T:
    """Decode a catalog document; errors name the file and what is wrong, in one line."""
    try:
        return msgspec.json.decode(data, type=kind)
    except msgspec.ValidationError as exc:
        raise InvalidArgument(f"{origin} is invalid: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise InvalidArgument(f"{origin} is not valid JSON: {exc}") from exc


def close_names(name: str, known: list[str]) -> list[str]:
    """Known names close enough to `name` to suggest as a likely typo."""
    return difflib.get_close_matches(name, known, n=3, cutoff=0.5)
