"""Exact-members mode: only listed regular files, each capped; hostile streams refused."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import tracemalloc
from pathlib import Path

import pytest

from banger.archive import ArchiveError, Limits, extract_exact
from tests.unit.archive_craft import (
    announced_longname,
    dirent,
    hard,
    header,
    reg,
    special,
    sym,
    tar_of,
    zero_bomb,
    zstd_chunks,
)

ALLOWED = {"commits.bundle": 1 << 20, "changes.diff": 1 << 20, "base": 64, "head": 64}


def run(data: bytes, into: Path, **kw: object) -> dict[str, bytes]:
    got = extract_exact(io.BytesIO(data), ALLOWED, into=into, origin="export", **kw)  # type: ignore[arg-type]
    try:
        assert stat.S_IMODE(got.root.stat().st_mode) == 0o700
        return {n: p.read_bytes() for n, p in got.files.items()}
    finally:
        got.remove()


def test_listed_files_with_root_and_one_top_dir(tmp_path: Path) -> None:
    data = tar_of([dirent("./"), dirent("ws"), reg("ws/base", b"a" * 40), reg("ws/head", b"b"),
                   reg("ws/changes.diff", b"diff")])
    assert run(data, tmp_path, top_dir=True, required=("base", "head")) == {
        "base": b"a" * 40, "head": b"b", "changes.diff": b"diff"}
    assert list(tmp_path.iterdir()) == []


def test_compressed_and_sparse(tmp_path: Path) -> None:
    data = zstd_chunks([tar_of([reg("./commits.bundle", bytes(300_000) + b"end")])])
    assert run(data, tmp_path)["commits.bundle"] == bytes(300_000) + b"end"


HOSTILE: dict[str, tuple[list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]], str]] = {
    "unexpected name": ([reg("evil")], "unexpected member"),
    "dotdot": ([reg("../base")], "contains '..'"),
    "dot component": ([reg("ws/./base")], "'.' path component"),
    "empty component": ([reg("ws//base")], "empty"),
    "absolute": ([reg("/base")], "absolute"),
    "nested": ([reg("a/b/base")], "unexpected member"),
    "symlink": ([sym("base", "/etc/passwd")], "symlink"),
    "hardlink": ([reg("head"), hard("base", "head")], "hard link"),
    "device": ([special("base", tarfile.CHRTYPE)], "device"),
    "directory": ([reg("ws/head"), dirent("ws/base")], "directory"),
    "duplicate": ([reg("base"), reg("base")], "twice"),
    "over its cap": ([reg("base", b"x" * 65)], "over its cap"),
    "second top dir": ([reg("a/base"), reg("b/head")], "second top-level"),
    "control chars in name": ([reg("\x1b[31mred" + "x" * 200)], "unexpected member"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_members_refused(tmp_path: Path, case: str) -> None:
    entries, match = HOSTILE[case]
    with pytest.raises(ArchiveError, match=match) as err:
        run(tar_of(entries), tmp_path, top_dir=True)
    message = str(err.value)
    assert "\n" not in message and "\x1b" not in message and len(message) < 400
    assert list(tmp_path.iterdir()) == []  # the private directory went with the failure


def test_required_member_missing(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="lacks base, head"):
        run(tar_of([reg("changes.diff")]), tmp_path, required=("base", "head"))


def test_announced_200mib_long_name_is_refused_before_it_is_read(tmp_path: Path) -> None:
    data = announced_longname(200 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(ArchiveError, match="long-name or pax header"):
            extract_exact(io.BytesIO(data), {"manifest.json": 1024}, into=tmp_path, origin="x")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


def test_chain_of_extended_headers_is_refused(tmp_path: Path) -> None:
    chain = b"".join(header("././@LongLink", 512, tarfile.GNUTYPE_LONGNAME) + b"a" * 512
                     for _ in range(5000))
    with pytest.raises(ArchiveError, match="extended headers in a row"):
        extract_exact(io.BytesIO(chain + tar_of([reg("base")])), ALLOWED, into=tmp_path,
                      origin="x", limits=Limits(stream_bytes=1 << 30))


def test_zero_bomb_stops_at_the_member_cap(tmp_path: Path) -> None:
    bomb = zero_bomb("commits.bundle", 4 << 30)  # 4 GiB of zeros in a few hundred KiB
    assert len(bomb) < 1 << 20
    with pytest.raises(ArchiveError, match="over the cap"):
        run(bomb, tmp_path)


def test_stream_cap_ends_a_bomb_of_skipped_bytes(tmp_path: Path) -> None:
    limits = Limits(stream_bytes=8 << 20)
    bomb = zero_bomb("commits.bundle", 64 << 20)
    with pytest.raises(ArchiveError, match="unpacks to more than"):
        extract_exact(io.BytesIO(bomb), {"commits.bundle": 1 << 30}, into=tmp_path, origin="x",
                      limits=limits)
    assert list(tmp_path.iterdir()) == []


def test_files_are_created_exclusively(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[int] = []
    real_open = os.open

    def spy(path: object, flags: int, *a: object, **kw: object) -> int:
        if kw.get("dir_fd") is not None:
            opened.append(flags)
        return real_open(path, flags, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", spy)
    run(tar_of([reg("base")]), tmp_path)
    want = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    assert opened and all(f & want == want for f in opened)


def test_garbage_is_one_error_line(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="not a valid tar") as err:
        run(b"\x28\xb5\x2f\xfd" + b"garbage" * 100, tmp_path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("variant", ["gnu", "pax 1.0", "pax 0.1"])
def test_sparse_members_are_refused(tmp_path: Path, variant: str) -> None:
    if variant == "gnu":
        data = header("base", 10, tarfile.GNUTYPE_SPARSE) + bytes(1024)
    else:
        info, payload = reg("base", b"99999999999\n" + bytes(500))
        info.pax_headers = ({"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                             "GNU.sparse.name": "base", "GNU.sparse.realsize": "10"}
                            if variant == "pax 1.0" else {"GNU.sparse.map": "0,1" * 1000,
                                                          "GNU.sparse.size": "10"})
        data = tar_of([(info, payload)])
    with pytest.raises(ArchiveError, match="sparse") as err:
        run(data, tmp_path)
    assert "\n" not in str(err.value)
