"""Property tests: any member sequence, any corruption, and the export reader either returns
the known files under their caps or raises a banger error; it never writes outside its
private directory."""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from banger.errors import BangerError
from banger.workspace import exportfile

pytestmark = pytest.mark.fuzz

KINDS = [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE,
         tarfile.CHRTYPE, tarfile.CONTTYPE]
KNOWN = [f"export/{name}" for name in exportfile.FILE_MEMBERS]
NAMES = st.one_of(
    st.sampled_from([*KNOWN, "export", "export/", "base", "./export/base", "export/../base",
                     "/tmp/x", "export/sub/base", "other/base", "export/escape/base", "..",
                     "export/" + "d" * 300]),
    st.text(alphabet="abcdex./\\\x1b\n\0-", min_size=1, max_size=40),
)
BODIES = st.one_of(st.just(b"0" * 40 + b"\n"), st.just(b"3 4\n"), st.just(b"{}"),
                   st.binary(max_size=300))
MEMBERS = st.tuples(NAMES, st.sampled_from(KINDS), BODIES, NAMES)


def tar_of(members: list[tuple[str, bytes, bytes, str]], fmt: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, kind, body, link in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            regular = kind in (tarfile.REGTYPE, tarfile.CONTTYPE)
            info.size = len(body) if regular else 0
            info.linkname = link if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
            try:
                tar.addfile(info, io.BytesIO(body) if regular else None)
            except (ValueError, UnicodeError):
                continue  # names the writer cannot encode in this format
    return buf.getvalue()


def check_read(data: bytes) -> None:
    """read_file on data: a banger error, or only known files within their caps."""
    with tempfile.TemporaryDirectory() as top:
        tmp = Path(top) / "t"
        tmp.mkdir()
        export = Path(top) / "export.tar"
        export.write_bytes(data)
        saved, tempfile.tempdir = tempfile.tempdir, str(tmp)
        try:
            got = exportfile.read_file(export)
        except BangerError as exc:
            assert "\n" not in exc.message and "\x1b" not in exc.message
            got = None
        finally:
            tempfile.tempdir = saved
        if got is not None:
            assert set(got.parts.files) <= set(exportfile.FILE_MEMBERS)
            for name, path in got.parts.files.items():
                assert path.parent == got.parts.root and not path.is_symlink()
                assert path.stat().st_size <= exportfile.FILE_MEMBERS[name]
            assert os.listdir(got.parts.root) == sorted(got.parts.files) or \
                set(os.listdir(got.parts.root)) == set(got.parts.files)
            got.remove()
        assert sorted(os.listdir(top)) == ["export.tar", "t"]  # nothing next to it
        assert os.listdir(tmp) == []  # and the private dir is gone


@given(st.lists(MEMBERS, max_size=12), st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT,
                                                         tarfile.USTAR_FORMAT]))
def test_any_member_sequence_is_read_strictly(members: list[tuple[str, bytes, bytes, str]],
                                              fmt: int) -> None:
    check_read(tar_of(members, fmt))


VALID = tar_of([("export", tarfile.DIRTYPE, b"", ""),
                ("export/base", tarfile.REGTYPE, b"a" * 40 + b"\n", ""),
                ("export/head", tarfile.REGTYPE, b"b" * 40 + b"\n", ""),
                ("export/summary", tarfile.REGTYPE, b"1 2\n", ""),
                ("export/commits.bundle", tarfile.REGTYPE, b"# v2 git bundle\n\n", ""),
                ("export/changes.diff", tarfile.REGTYPE, b"", "")], tarfile.PAX_FORMAT)


@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=8),
       st.integers(0, len(VALID)))
def test_corrupted_exports_only_raise_banger_errors(flips: list[tuple[int, int]],
                                                    cut: int) -> None:
    data = bytearray(VALID)
    for at, value in flips:
        data[at] = value
    check_read(bytes(data[:cut] if cut else data))
