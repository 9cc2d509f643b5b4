"""Layer flattening on handcrafted tars: whiteouts, metadata, links, and malicious members."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from collections.abc import Sequence
from pathlib import Path

import pytest
import zstandard

from banger.images.oci.flatten import Flattener, LayerError

Entry = tuple[str, str, object]  # (name, kind, payload)


def make_tar(entries: Sequence[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info, data = e if isinstance(e, tuple) else (e, b"")
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def f(name: str, data: bytes = b"x", mode: int = 0o644, uid: int = 0, gid: int = 0,
      mtime: int = 1_600_000_000) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.uid, info.gid, info.mtime = len(data), mode, uid, gid, mtime
    return info, data


def d(name: str, mode: int = 0o755, uid: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.mtime = tarfile.DIRTYPE, mode, uid, 1_600_000_000
    return info


def link(name: str, target: str, hard: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info


def node(name: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = kind, 1, 3
    return info


def flatten(root: Path, *layers: bytes) -> Flattener:
    fl = Flattener(root)
    for i, data in enumerate(layers):
        fl.apply(io.BytesIO(data), f"layer {i}")
    return fl


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    return r


def test_whiteouts_and_opaque_dirs(root: Path) -> None:
    base = make_tar([d("etc"), f("etc/keep"), f("etc/gone"), d("opt"), d("opt/app"),
                     f("opt/app/old"), d("opt/app/sub"), f("opt/app/sub/old")])
    top = make_tar([f("etc/.wh.gone", b""), d("opt/app"), f("opt/app/.wh..wh..opq", b""),
                    f("opt/app/new"), f("opt/app/sub/new"), f("etc/fresh"), f("etc/.wh.fresh")])
    with flatten(root, base, top):
        pass
    assert (root / "etc/keep").exists() and not (root / "etc/gone").exists()
    assert sorted(p.name for p in (root / "opt/app").iterdir()) == ["new", "sub"]
    assert sorted(p.name for p in (root / "opt/app/sub").iterdir()) == ["new"]
    assert (root / "etc/fresh").exists()  # a whiteout only hides lower layers


def test_metadata_links_and_fixups(root: Path) -> None:
    layer = make_tar([d("usr", 0o755), d("usr/bin"), f("usr/bin/su", b"su", 0o4755),
                      d("home"), d("home/me", 0o700, uid=1000), f("home/me/f", b"1", 0o640, 1000, 1000),
                      link("usr/bin/su2", "usr/bin/su", hard=True), link("usr/bin/sh", "dash"),
                      d("tmp", 0o1777), node("dev-null", tarfile.CHRTYPE), node("fifo", tarfile.FIFOTYPE)])
    with flatten(root, layer) as fl:
        out = fl.finalize()
        notes = fl.notes
    su = root / "usr/bin/su"
    assert os.lstat(su).st_ino == os.lstat(root / "usr/bin/su2").st_ino
    assert os.readlink(root / "usr/bin/sh") == "dash"
    assert int(su.stat().st_mtime) == 1_600_000_000
    assert len(notes) == 2 and not (root / "fifo").exists()
    owners = {o.path: o for o in out.owners}
    assert owners["/home/me/f"].uid == 1000 and owners["/home/me/f"].mode == stat.S_IFREG | 0o640
    assert owners["/home/me"].mode == stat.S_IFDIR | 0o700
    if os.geteuid() == 0:  # as root the host tree already holds modes; only owners differ
        assert stat.S_IMODE(su.stat().st_mode) == 0o4755
        assert stat.S_IMODE((root / "tmp").stat().st_mode) == 0o1777
        assert "/usr/bin/su" not in owners


def test_layer_replaces_file_with_dir_and_breaks_hardlinks(root: Path) -> None:
    base = make_tar([f("a", b"1"), link("b", "a", hard=True), d("x"), f("x/y")])
    top = make_tar([f("b", b"2"), f("x", b"now a file")])
    with flatten(root, base, top):
        pass
    assert (root / "a").read_bytes() == b"1" and (root / "b").read_bytes() == b"2"
    assert (root / "x").read_bytes() == b"now a file"


def test_compressed_layers(root: Path) -> None:
    data = make_tar([f("gz", b"g")])
    zst = zstandard.ZstdCompressor().compress(make_tar([f("zst", b"z")]))
    with flatten(root, gzip.compress(data), zst):
        pass
    assert (root / "gz").read_bytes() == b"g" and (root / "zst").read_bytes() == b"z"


@pytest.mark.parametrize("entries, message", [
    ([f("../evil")], "contains '..'"),
    ([f("a/../../evil")], "contains '..'"),
    ([f("/etc/evil")], "absolute path"),
    ([link("esc", "../../../../tmp")], "escapes the root"),
    ([d("a"), link("a/esc", "../..")], "escapes the root"),
    ([f("x"), link("h", "../x", hard=True)], "contains '..'"),
    ([f('bad"name')], "cannot hold"),
    ([f("new\nline")], "cannot hold"),
    ([f("n" * 256)], "longer than 255 bytes"),
])
def test_malicious_members_are_rejected(tmp_path: Path, root: Path, entries: list[tarfile.TarInfo],
                                        message: str) -> None:
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(LayerError, match=message), flatten(root, make_tar(entries)):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not (tmp_path / "evil").exists()


def test_absolute_symlink_then_file_through_it_stays_inside(tmp_path: Path, root: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("host")
    layer = make_tar([link("esc", str(outside)), f("esc/victim", b"pwned"), f("esc/new", b"n"),
                      link("etc", "/"), f("etc/also", b"a")])
    with flatten(root, layer):
        pass
    assert (outside / "victim").read_text() == "host"
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    inside = root / str(outside).lstrip("/")
    assert (inside / "victim").read_bytes() == b"pwned" and (inside / "new").exists()
    assert (root / "also").read_bytes() == b"a"


def test_symlink_then_dotdot_through_it_is_rejected(tmp_path: Path, root: Path) -> None:
    layer = make_tar([d("a"), link("a/up", ".."), f("a/up/ok"), link("a/up2", "../.."),
                      f("a/up2/evil")])
    with pytest.raises(LayerError, match="escapes the root"), flatten(root, layer):
        pass
    assert (root / "ok").exists() and not (tmp_path / "evil").exists()
