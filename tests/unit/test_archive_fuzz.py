"""Property tests: random member sequences through every extractor never create, change or
remove anything outside the destination, respect the caps, and fail only with a banger error."""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from banger.archive import Limits, extract_exact
from banger.archive.extract import extract
from banger.debian.deb import extract_deb
from banger.errors import BangerError
from banger.images.bundle import extract_bundle
from banger.images.oci.flatten import Flattener
from tests.unit.test_archive_attacks import ar_deb

pytestmark = pytest.mark.fuzz

PARTS = ["a", "b", ".", "..", "", ".wh.a", ".wh..", ".wh...", ".wh..wh..opq", "manifest.json",
         "rootfs.ext4", "sentinel"]
TARGETS = ["a", "b", "..", "../..", "../sentinel", "/", "/a", "a/b", ".", "../../sentinel/keep",
           "sentinel/keep", "rootfs.ext4"]
KINDS = [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE]
CAP = 4096

names = st.builds(
    lambda prefix, parts: prefix + "/".join(parts),
    st.sampled_from(["", "", "./", "/"]),
    st.lists(st.sampled_from(PARTS), min_size=1, max_size=4),
)
members = st.lists(st.tuples(names, st.sampled_from(KINDS), st.sampled_from(TARGETS),
                             st.integers(0, 3000)), max_size=12)


def build_tar(entries: list[tuple[str, bytes, str, int]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, target, size in entries:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mode = kind, target, 0o755
            info.size = size if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(b"z" * info.size) if kind == tarfile.REGTYPE else None)
    return buf.getvalue()


@contextmanager
def box() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        b = Path(tmp) / "box"
        (b / "dest").mkdir(parents=True)
        (b / "sentinel").mkdir()
        (b / "sentinel" / "keep").write_text("host")
        yield b
        assert sorted(p.name for p in b.iterdir()) == ["dest", "sentinel"]
        assert [p.name for p in (b / "sentinel").iterdir()] == ["keep"]
        keep = b / "sentinel" / "keep"
        assert keep.read_text() == "host" and os.stat(keep).st_nlink == 1
        assert_inside(b / "dest")


def assert_inside(dest: Path) -> None:
    """Every entry under dest is really in it, and nothing written exceeds the total cap."""
    real = os.path.realpath(dest)
    total = 0
    for dirpath, dirs, files in os.walk(dest, followlinks=False):
        assert os.path.commonpath([os.path.realpath(dirpath), real]) == real
        for name in files:
            st_ = os.lstat(os.path.join(dirpath, name))
            total += st_.st_size if not os.path.islink(os.path.join(dirpath, name)) else 0
        assert len(dirs) + len(files) <= 100
    assert total <= 4 * CAP


def only_banger_errors(run: Callable[[], object]) -> None:
    try:
        run()
    except BangerError as exc:
        assert "\n" not in str(exc)


LIMITS = Limits(members=20, member_bytes=CAP, total_bytes=4 * CAP, stream_bytes=1 << 20)


@given(members)
def test_extract(entries: list[tuple[str, bytes, str, int]]) -> None:
    data = build_tar(entries)
    with box() as b:
        only_banger_errors(lambda: extract(io.BytesIO(data), b / "dest", origin="fuzz",
                                           limits=LIMITS))


@given(members, members)
def test_oci_flatten(lower: list[tuple[str, bytes, str, int]],
                     upper: list[tuple[str, bytes, str, int]]) -> None:
    layers = [build_tar(lower), zstandard.ZstdCompressor().compress(build_tar(upper))]

    def run() -> None:
        fl = Flattener(b / "dest", LIMITS)
        try:
            for i, layer in enumerate(layers):
                fl.apply(io.BytesIO(layer), f"layer {i}")
            fl.finalize()
        finally:
            fl.close()

    with box() as b:
        only_banger_errors(run)


@given(members)
def test_deb(entries: list[tuple[str, bytes, str, int]]) -> None:
    with box() as b:
        deb = b.parent / "fuzz.deb"
        deb.write_bytes(ar_deb(build_tar(entries)))
        only_banger_errors(lambda: extract_deb(deb, b / "dest"))


@given(members)
def test_bundle(entries: list[tuple[str, bytes, str, int]]) -> None:
    with box() as b:
        bundle = b.parent / "fuzz.tar.zst"
        bundle.write_bytes(zstandard.ZstdCompressor().compress(build_tar(entries)))
        only_banger_errors(lambda: extract_bundle(bundle, b / "dest"))


@given(members, st.booleans())
def test_exact(entries: list[tuple[str, bytes, str, int]], top_dir: bool) -> None:
    data = build_tar(entries)
    allowed = {"a": CAP, "b": 100, "rootfs.ext4": 2 * CAP}

    def run() -> None:
        got = extract_exact(io.BytesIO(data), allowed, into=b / "dest", origin="fuzz",
                            top_dir=top_dir)
        for name, path in got.files.items():
            assert path.parent == got.root and path.stat().st_size <= allowed[name]
            assert not path.is_symlink()
        got.remove()

    with box() as b:
        only_banger_errors(run)
        assert list((b / "dest").iterdir()) == []
