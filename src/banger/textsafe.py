"""Untrusted text (from a guest, an image or a download) made safe to print or store.

Anything a guest or an image wrote passes through here before banger's own output shows it:
terminal controls (C0, C1, DEL) and bidi overrides are removed and length is capped (the CLI
shows it as literal rich Text, never as markup). A command's own output under `vm exec` is not
banger's output and stays raw.
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


# CSI, OSC (ended by BEL or ST), DCS/SOS/PM/APC strings, and two-byte ESC sequences.
_ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)"
                      r"|[PX^_][^\x1b]*\x1b\\|[ -/]*[0-OQ-WYZ\\`-~])")
_MAX_PENDING = 4096


class TerminalFilter:
    """Streamed untrusted bytes made safe for a terminal: escape sequences removed whole.

    A sequence split across chunks is held back until its end arrives (at most 4 KiB).
    """

    def __init__(self) -> None:
        import codecs

        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""

    def feed(self, data: bytes, *, final: bool = False) -> bytes:
        text = _ESCAPES.sub("", self._pending + self._decoder.decode(data, final=final))
        cut = text.rfind("\x1b")
        if cut >= 0 and not final and len(text) - cut <= _MAX_PENDING:
            text, self._pending = text[:cut], text[cut:]
        else:
            self._pending = ""
        return clean(text).encode()
