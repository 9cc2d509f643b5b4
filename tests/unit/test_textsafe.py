"""Untrusted text for banger's own output: controls gone, escape sequences removed whole."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from banger.textsafe import TerminalFilter, clean, one_line


def test_clean_and_one_line_drop_controls_and_bidi() -> None:
    hostile = "\x1b]0;X\x07[red]Y\u202e\x9b2J\tz\r\nw"
    assert clean(hostile) == "]0;X[red]Y2J\tz\nw"
    assert one_line(hostile) == "]0;X[red]Y2J z | w"
    assert clean("abcdef", limit=4) == "abc…"


def test_the_filter_removes_sequences_split_across_chunks() -> None:
    f = TerminalFilter()
    chunks = [b"[\x1b[0;32m  OK  \x1b[0", b"m] up\r\n\x1b]0;own", b"ed\x07t \xe2", b"\x80\xa6\x1bP1$r"]
    out = b"".join(f.feed(c) for c in chunks) + f.feed(b"x\x1b\\ end", final=True)
    assert out == "[  OK  ] up\nt … end".encode()


@pytest.mark.fuzz
@given(st.lists(st.binary(max_size=64), max_size=20))
def test_filtered_output_has_no_escape_or_control_byte(chunks: list[bytes]) -> None:
    f = TerminalFilter()
    out = b"".join(f.feed(c) for c in chunks) + f.feed(b"", final=True)
    text = out.decode()
    assert not any((ord(c) < 32 and c not in "\t\n") or 0x7F <= ord(c) <= 0x9F for c in text)
