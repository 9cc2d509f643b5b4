"""Each hostile archive from issue 12 (items 2, 3, 9, 15), built here, through the public entry
points a user's command reaches: layer flattening, .deb unpacking, bundle and kernel import,
downloads. Every attack must end in one banger error line with nothing touched outside."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import tarfile
import tracemalloc
from pathlib import Path

import pytest
import zstandard

from banger.debian.deb import extract_deb
from banger.download import download
from banger.errors import BangerError
from banger.images.bundle import import_bundle
from banger.images.oci.flatten import Flattener
from banger.kernels.catalog import CatalogEntry
from banger.kernels.pull import pull_kernel
from banger.paths import Paths
from tests.unit.archive_craft import (
    announced_longname,
    dirent,
    hard,
    header,
    reg,
    sym,
    tar_of,
    zero_bomb,
)


@pytest.fixture
def box(tmp_path: Path) -> Path:
    """box/ holds the destination `dest` and a sentinel sibling nothing may touch."""
    b = tmp_path / "box"
    (b / "dest").mkdir(parents=True)
    (b / "sentinel").mkdir()
    (b / "sentinel" / "keep").write_text("host")
    return b


def assert_untouched(box: Path) -> None:
    assert sorted(p.name for p in box.iterdir()) == ["dest", "sentinel"]
    assert [p.name for p in (box / "sentinel").iterdir()] == ["keep"]
    assert (box / "sentinel" / "keep").read_text() == "host"


def assert_one_line(err: BaseException) -> None:
    text = str(err)
    assert "\n" not in text and len(text) < 600


def flatten(root: Path, *layers: bytes) -> None:
    fl = Flattener(root)
    try:
        for i, data in enumerate(layers):
            fl.apply(io.BytesIO(data), f"layer {i}")
    finally:
        fl.close()


def ar_deb(data_tar: bytes, *, packed: bytes | None = None) -> bytes:
    """A .deb (ar) whose data.tar.zst holds `data_tar` (or the already compressed `packed`)."""
    data_zst = packed if packed is not None else zstandard.ZstdCompressor().compress(data_tar)
    out = bytearray(b"!<arch>\n")
    for name, data in (("debian-binary", b"2.0\n"), ("data.tar.zst", data_zst)):
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
        out += data + (b"\n" if len(data) % 2 else b"")
    return bytes(out)


# ---- item 2: whiteouts naming '..', '.' or nothing ---------------------------------------


@pytest.mark.parametrize("whiteout", [".wh...", "a/.wh...", ".wh..", "a/.wh..", ".wh.", "a/.wh."])
def test_whiteout_of_dot_dot_removes_nothing(box: Path, whiteout: str) -> None:
    root = box / "dest"
    lower = tar_of([dirent("a"), reg("a/file", b"lower"), reg("top", b"t")])
    with pytest.raises(BangerError, match=r"whiteout|refusing") as err:
        flatten(root, lower, tar_of([reg(whiteout, b"")]))
    assert_one_line(err.value)
    assert_untouched(box)
    assert (root / "a/file").read_bytes() == b"lower" and (root / "top").exists()


# ---- item 3: the CVE-2025-4517 shape, symlinks, hard links -----------------------------


def path_max_chain(escape_to: str) -> list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]:
    """Directories of 247-char names reached through one-letter symlinks: the real path
    passes PATH_MAX, so realpath() stops resolving and a lexical check is fooled."""
    comp = "d" * 247
    steps = "abcdefghijklmnop"
    entries: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]] = []
    path = ""
    for step in steps:
        entries.append(dirent(os.path.join(path, comp)))
        entries.append(sym(os.path.join(path, step), comp))
        path = os.path.join(path, comp)
    linkpath = os.path.join(*steps, "l" * 254)
    entries.append(sym(linkpath, "../" * len(steps)))
    entries.append(sym("escape", linkpath + "/../" + escape_to))  # dest/.. = the box
    entries.append(reg("escape/pwned", b"pwned"))
    return entries


def test_path_max_symlink_chain_in_a_deb_cannot_write_outside(box: Path) -> None:
    deb = box.parent / "forged.deb"
    deb.write_bytes(ar_deb(tar_of(path_max_chain("sentinel"), fmt=tarfile.GNU_FORMAT)))
    with pytest.raises(BangerError, match="refusing member") as err:
        extract_deb(deb, box / "dest")
    assert_one_line(err.value)
    assert_untouched(box)


def test_symlink_then_a_file_through_it_in_a_deb_is_refused(box: Path) -> None:
    deb = box.parent / "forged.deb"
    deb.write_bytes(ar_deb(tar_of([dirent("./sub"), sym("./lnk", "sub"),
                                   reg("./lnk/f", b"through")])))
    with pytest.raises(BangerError, match="symlink"):
        extract_deb(deb, box / "dest")
    assert not (box / "dest/sub/f").exists()
    assert_untouched(box)


@pytest.mark.parametrize("target", ["../sentinel/keep", "/etc/passwd", "esc/keep",
                                    "./../sentinel/keep"])
def test_hard_link_to_outside_is_refused(box: Path, target: str) -> None:
    entries = [sym("esc", "../sentinel"), hard("h", target)]
    with pytest.raises(BangerError):
        flatten(box / "dest", tar_of(entries))
    deb = box.parent / "forged.deb"
    deb.write_bytes(ar_deb(tar_of([hard("./h", target)])))
    with pytest.raises(BangerError):
        extract_deb(deb, box / "dest2")
    assert os.stat(box / "sentinel/keep").st_nlink == 1
    assert sorted(p.name for p in box.iterdir()) == ["dest", "dest2", "sentinel"]


# ---- item 9: header sizes and decompression bombs ---------------------------------------


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path / "c", tmp_path / "state", tmp_path / "cache", tmp_path / "r")


def test_bundle_announcing_a_200mib_long_name_is_refused_in_bounded_memory(
        paths: Paths, tmp_path: Path) -> None:
    bundle = tmp_path / "long.tar.zst"
    bundle.write_bytes(announced_longname(200 << 20))
    sha = hashlib.sha256(bundle.read_bytes()).hexdigest()
    tracemalloc.start()
    try:
        with pytest.raises(BangerError, match="long-name or pax header") as err:
            asyncio.run(import_bundle(paths, bundle, sha))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert_one_line(err.value)
    assert peak < 32 << 20  # the old reader held the 200 MiB name (and copies) in memory


def test_kernel_bundle_zero_bomb_is_refused_at_its_header(paths: Paths, tmp_path: Path) -> None:
    blob = tmp_path / "kernel.tar.zst"
    blob.write_bytes(zero_bomb("vmlinux", 1 << 30))  # 1 GiB of zeros, ~100 KiB compressed
    entry = CatalogEntry(name="bomb", kind="bundle", url=blob.as_uri(),
                         sha256=hashlib.sha256(blob.read_bytes()).hexdigest())
    with pytest.raises(BangerError, match="over") as err:
        asyncio.run(pull_kernel(entry, paths, None))
    assert_one_line(err.value)
    assert list(paths.kernels_dir.iterdir()) == []


def test_deb_zero_bomb_is_refused_at_its_header(box: Path) -> None:
    deb = box.parent / "bomb.deb"
    deb.write_bytes(ar_deb(b"", packed=zero_bomb("./usr/share/big", 2 << 30)))
    with pytest.raises(BangerError, match="over the cap"):
        extract_deb(deb, box / "dest")
    assert not (box / "dest/usr/share/big").exists()
    assert_untouched(box)


def test_a_chain_of_long_name_headers_is_one_error(box: Path) -> None:
    chain = b"".join(header("././@LongLink", 512, tarfile.GNUTYPE_LONGNAME) + b"a" * 512
                     for _ in range(3000))
    with pytest.raises(BangerError) as err:
        flatten(box / "dest", chain + tar_of([reg("f")]))
    assert_one_line(err.value)


# ---- item 15: a planted .part --------------------------------------------------------------


def test_planted_part_symlink_is_not_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload" * 100)
    dest = tmp_path / "cache" / "file.bin"
    dest.parent.mkdir()
    (dest.parent / "file.bin.part").symlink_to(victim)
    asyncio.run(download(src.as_uri(), dest,
                         sha256=hashlib.sha256(src.read_bytes()).hexdigest()))
    assert victim.read_text() == "precious"
    assert not dest.is_symlink() and dest.read_bytes() == b"payload" * 100


def test_publish_into_a_symlinked_images_dir(tmp_path: Path) -> None:
    from banger.images.recipe import publish

    real = tmp_path / "disk" / "images"
    real.mkdir(parents=True)
    (tmp_path / "images").symlink_to(real)  # users (and the VM tests) link images elsewhere
    stage = tmp_path / "images" / ".staging-x"
    stage.mkdir()
    (stage / "rootfs.ext4").write_bytes(b"fs")
    publish(stage, tmp_path / "images" / "x")
    assert (real / "x" / "rootfs.ext4").read_bytes() == b"fs"


# ---------------------------------------------------------------- found by review


def _raw_header(name: bytes, size_field: bytes, kind: bytes = b"0") -> bytes:
    """A ustar header with a size field as given (base-256 can say a negative size)."""
    h = bytearray(512)
    h[0:len(name)] = name
    h[100:108], h[108:116], h[116:124] = b"0000644\0", b"0000000\0", b"0000000\0"
    h[124:136], h[136:148], h[156:157] = size_field, b"00000000000\0", kind
    h[257:263], h[263:265], h[148:156] = b"ustar\0", b"00", b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def test_a_negative_member_size_is_refused(box: Path) -> None:
    from banger.archive import extract_exact

    data = _raw_header(b"base", b"\xff" * 11 + b"\xfb") + bytes(1024)  # size -5
    with pytest.raises(BangerError, match="negative size") as err:  # was a bare ValueError
        extract_exact(io.BytesIO(data), {"base": 64}, into=box / "dest", origin="export",
                      decompress=False)
    assert_one_line(err.value)


def test_global_pax_headers_cannot_grow_memory(box: Path) -> None:
    """Each global header is small, but tarfile keeps every one: the total is capped."""
    out = io.BytesIO()
    for i in range(400):  # 24 MiB of global headers, each 60 KiB, an empty file between
        rec = b" " + b"k%08d" % i + b"x" * 60000 + b"=v\n"
        n = len(rec) + len(str(len(rec) + 6))
        rec = str(n).encode() + rec
        g = tarfile.TarInfo("g")
        g.type, g.size = tarfile.XGLTYPE, len(rec)
        out.write(g.tobuf(tarfile.USTAR_FORMAT) + rec + bytes(-len(rec) % 512))
        out.write(tarfile.TarInfo(f"f{i}").tobuf(tarfile.USTAR_FORMAT))
    out.write(bytes(1024))
    deb_tar = out.getvalue()
    from banger.debian.deb import extract_tar

    tracemalloc.start()
    try:
        with pytest.raises(BangerError, match="global pax headers") as err:
            extract_tar(io.BytesIO(deb_tar), box / "dest", origin="forged.deb")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"peak {peak >> 20} MiB"
    assert_one_line(err.value)


def test_symlinks_that_climb_are_refused_outside_layers(box: Path) -> None:
    """a/b -> .. and a/x -> b/../.. each stay inside by lexical depth, yet a/x escapes."""
    from banger.debian.deb import extract_tar

    data = tar_of([dirent("a"), sym("a/b", ".."), sym("a/x", "b/../..")])
    with pytest.raises(BangerError, match="climbs"):
        extract_tar(io.BytesIO(data), box / "dest", origin="forged.deb")
    assert not (box / "dest" / "a" / "x").is_symlink()
    assert_untouched(box)
