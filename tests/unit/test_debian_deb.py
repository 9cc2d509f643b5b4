""".deb unpacking in pure Python, and the strict tar member filter."""

from __future__ import annotations

import gzip
import io
import lzma
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from banger.debian.deb import (
    deb_control,
    deb_members,
    extract_deb,
    extract_tar,
    parse_control,
    read_ar_members,
)
from banger.errors import OperationFailed
from banger.runner import run, which


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def entry(name: str, data: bytes = b"", *, kind: bytes = tarfile.REGTYPE,
          link: str = "", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = mode
    return info, data


def ar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    out = bytearray(b"!<arch>\n")
    for name, data in members:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
        out += data + (b"\n" if len(data) % 2 else b"")
    return bytes(out)


COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "xz": lzma.compress,
    "gz": gzip.compress,
    "zst": lambda b: zstandard.ZstdCompressor().compress(b),
}


def make_deb(path: Path, data_members: list[tuple[tarfile.TarInfo, bytes]],
             comp: str = "xz") -> Path:
    control = tar_bytes([entry("./control", b"Package: demo\nVersion: 1.0-1\nDepends: a, b\n")])
    path.write_bytes(ar_bytes([
        ("debian-binary", b"2.0\n"),
        ("control.tar.xz", lzma.compress(control)),
        (f"data.tar.{comp}", COMPRESS[comp](tar_bytes(data_members))),
    ]))
    return path


GOOD = [
    entry("./", kind=tarfile.DIRTYPE, mode=0o755),
    entry("./usr/", kind=tarfile.DIRTYPE, mode=0o755),
    entry("./usr/bin/", kind=tarfile.DIRTYPE, mode=0o755),
    entry("./usr/bin/tool", b"#!/bin/sh\necho hi\n", mode=0o4755),
    entry("./usr/bin/alias", kind=tarfile.SYMTYPE, link="tool"),
    entry("./usr/share/doc/demo/readme", b"odd"),  # odd size exercises ar padding
    entry("./usr/bin/hard", kind=tarfile.LNKTYPE, link="./usr/bin/tool"),
]


@pytest.mark.parametrize("comp", ["xz", "gz", "zst"])
def test_extract_whole_deb(tmp_path: Path, comp: str) -> None:
    deb = make_deb(tmp_path / "demo.deb", GOOD, comp)
    dest = tmp_path / "out"
    written = extract_deb(deb, dest)
    assert "usr/bin/tool" in written
    tool = dest / "usr/bin/tool"
    assert tool.read_bytes() == b"#!/bin/sh\necho hi\n"
    assert tool.stat().st_mode & 0o7777 == 0o755  # setuid dropped
    assert (dest / "usr/bin/alias").readlink() == Path("tool")
    assert (dest / "usr/bin/hard").read_bytes() == tool.read_bytes()
    assert (dest / "usr/share/doc/demo/readme").read_bytes() == b"odd"


def test_extract_selected_members(tmp_path: Path) -> None:
    deb = make_deb(tmp_path / "demo.deb", GOOD)
    dest = tmp_path / "out"
    assert extract_deb(deb, dest, select=lambda n: n.endswith("readme")) == [
        "usr/share/doc/demo/readme"
    ]
    assert not (dest / "usr/bin").exists()


def test_members_and_control(tmp_path: Path) -> None:
    deb = make_deb(tmp_path / "demo.deb", GOOD)
    assert "usr/bin/tool" in deb_members(deb)
    assert deb_control(deb)["Version"] == "1.0-1"
    with deb.open("rb") as fh:
        names = [m.name for m in read_ar_members(fh, "demo")]
    assert names == ["debian-binary", "control.tar.xz", "data.tar.xz"]


@pytest.mark.skipif(which("ar") is None, reason="binutils ar not installed")
def test_deb_built_with_system_ar(tmp_path: Path) -> None:
    (tmp_path / "debian-binary").write_bytes(b"2.0\n")
    (tmp_path / "control.tar.gz").write_bytes(gzip.compress(tar_bytes([entry("./control")])))
    (tmp_path / "data.tar.gz").write_bytes(gzip.compress(tar_bytes(GOOD)))
    deb = tmp_path / "sys.deb"
    run(["ar", "rc", deb, "debian-binary", "control.tar.gz", "data.tar.gz"], cwd=tmp_path)
    extract_deb(deb, tmp_path / "out")
    assert (tmp_path / "out/usr/bin/tool").is_file()


BAD = {
    "dotdot": [entry("./../evil", b"x")],
    "absolute": [entry("/etc/evil", b"x")],
    "symlink-out": [entry("./link", kind=tarfile.SYMTYPE, link="../../etc")],
    "symlink-absolute": [entry("./link", kind=tarfile.SYMTYPE, link="/etc/passwd")],
    "symlink-then-write": [
        entry("./d", kind=tarfile.SYMTYPE, link="."),
        entry("./d/x", kind=tarfile.SYMTYPE, link="../.."),
    ],
    "hardlink-out": [entry("./h", kind=tarfile.LNKTYPE, link="/etc/passwd")],
    "chardev": [entry("./dev/null", kind=tarfile.CHRTYPE)],
    "blockdev": [entry("./dev/sda", kind=tarfile.BLKTYPE)],
    "fifo": [entry("./fifo", kind=tarfile.FIFOTYPE)],
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_unsafe_members_are_refused(tmp_path: Path, case: str) -> None:
    deb = make_deb(tmp_path / "bad.deb", BAD[case])
    dest = tmp_path / "root" / "out"
    with pytest.raises(OperationFailed) as err:
        extract_deb(deb, dest)
    assert "refusing member" in str(err.value)
    assert not (tmp_path / "root" / "evil").exists()
    assert not (tmp_path / "evil").exists()


def test_links_can_be_forbidden(tmp_path: Path) -> None:
    data = tar_bytes([entry("./a", b"x"), entry("./b", kind=tarfile.SYMTYPE, link="a")])
    with pytest.raises(OperationFailed, match="links are not allowed"):
        extract_tar(io.BytesIO(data), tmp_path / "out", allow_links=False)


def test_not_a_deb(tmp_path: Path) -> None:
    junk = tmp_path / "junk.deb"
    junk.write_bytes(b"hello world")
    with pytest.raises(OperationFailed, match=r"not a \.deb"):
        extract_deb(junk, tmp_path / "out")


def test_truncated_deb(tmp_path: Path) -> None:
    deb = make_deb(tmp_path / "demo.deb", GOOD)
    deb.write_bytes(deb.read_bytes()[:-200])
    with pytest.raises(OperationFailed):
        extract_deb(deb, tmp_path / "out")


def test_parse_control_continuations() -> None:
    fields = parse_control("Package: x\nDescription: short\n long line\n .\nSize: 3\n")
    assert fields["Description"] == "short\nlong line\n."
    assert fields["Size"] == "3"
