"""Untrusted text (from a guest, an image or a download) made safe to print or store.

Anything a guest or an image wrote passes through here before banger's own output shows it:
terminal controls (C0, C1, DEL) and bidi overrides are removed, length is capped, and rich
markup is escaped where a rich renderable shows it. A command's own output under `vm exec`
is not banger's output and stays raw.
"""

from __future__ import annotations

import re

# C0 except tab and newline, DEL, C1, and the bidi controls that reorder what a line shows.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NEWLINES = re.compile(r"\s*\n\s*")
ELLIPSIS = "…"


def clean(text: str, *, limit: int | None = None) -> str:
    """text without terminal controls (tabs and newlines stay), cut to limit characters."""
    text = _CONTROLS.sub("", text)
    if limit is not None and len(text) > limit:
        return text[: max(limit - 1, 0)] + ELLIPSIS
    return text


def one_line(text: str, limit: int = 300) -> str:
    """text as one printable line: controls removed, lines joined with ' | ', capped."""
    joined = _NEWLINES.sub(" | ", _CONTROLS.sub("", text).replace("\t", " ").strip())
    return clean(joined, limit=limit)


def from_bytes(data: bytes, *, limit: int | None = None) -> str:
    """Decode untrusted bytes (invalid UTF-8 replaced) and clean them."""
    return clean(data.decode("utf-8", errors="replace"), limit=limit)


def markup_escaped(text: str) -> str:
    """clean(text) with rich markup escaped, for strings that go into a rich renderable."""
    from rich.markup import escape

    return escape(clean(text))
