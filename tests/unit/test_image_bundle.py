"""Bundle export/import round trip and every kind of bad bundle; no VM, no network."""

from __future__ import annotations

import asyncio
import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
import zstandard

from banger.errors import Conflict, InvalidArgument, NotFound, OperationFailed
from banger.images import ext4
from banger.images.bundle import export_bundle, import_bundle
from banger.images.manifest import (
    ImageManifest,
    delete_image,
    get_image,
    image_dir,
    list_images,
    sha256_file,
    utc_now,
    write_manifest,
)
from banger.paths import Paths, resolve_paths


def _paths(tmp: Path) -> Paths:
    return resolve_paths({"BANGER_HOME": str(tmp / "home")})


def make_image(paths: Paths, name: str = "tiny", size_mib: int = 8) -> ImageManifest:
    """A real (small) ext4 image registered the way builds register them."""
    tree = paths.cache_dir / f"tree-{name}"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/hostname").write_text("tiny\n")
    d = image_dir(paths, name)
    d.mkdir(parents=True)
    img = d / "rootfs.ext4"
    asyncio.run(ext4.make_ext4(tree, img, size_mib << 20))
    m = ImageManifest(
        name=name, distro="debian", arch="amd64", kernel="debian-bookworm-cloud",
        sha256=sha256_file(img), size=img.stat().st_size, built=utc_now(), packages=["x"],
    )
    write_manifest(d / "manifest.json", m)
    return m


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    p = _paths(tmp_path)
    p.ensure()
    return p


def leftovers(paths: Paths) -> list[str]:
    return sorted(p.name for p in paths.images_dir.iterdir() if p.name.startswith("."))


def test_round_trip(paths: Paths, tmp_path: Path) -> None:
    m = make_image(paths)
    bundle = export_bundle(paths, "tiny", tmp_path / "out")
    sha = sha256_file(bundle)
    assert bundle.name == f"tiny-amd64-{sha[:12]}.tar.zst"
    with bundle.open("rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as zr, \
            tarfile.open(fileobj=zr, mode="r|") as tar:
        assert [t.name for t in tar] == ["manifest.json", "rootfs.ext4"]
    stages: list[str] = []
    got = asyncio.run(import_bundle(paths, bundle, sha, lambda s, f=None, m="": stages.append(s),
                                    name="tiny2"))
    assert got.name == "tiny2" and got.sha256 == m.sha256
    img = image_dir(paths, "tiny2") / "rootfs.ext4"
    assert sha256_file(img) == m.sha256
    assert img.stat().st_blocks * 512 < img.stat().st_size  # extracted sparse
    assert [x.name for x in list_images(paths)] == ["tiny", "tiny2"]
    assert "extract" in stages and "checksum" in stages
    assert leftovers(paths) == []
    # the same bundle again under an existing name: refused before any work
    with pytest.raises(Conflict, match="already exists"):
        asyncio.run(import_bundle(paths, bundle, sha, name="tiny2"))
    with pytest.raises(Conflict):
        asyncio.run(import_bundle(paths, bundle, sha))  # manifest name "tiny" exists
    assert leftovers(paths) == []


def test_file_url(paths: Paths, tmp_path: Path) -> None:
    m = make_image(paths)
    bundle = export_bundle(paths, "tiny", tmp_path / "out dir")
    got = asyncio.run(import_bundle(paths, bundle.as_uri(), sha256_file(bundle), name="viaurl"))
    assert got.sha256 == m.sha256


def test_export_is_deterministic_for_same_image(paths: Paths, tmp_path: Path) -> None:
    make_image(paths)
    a = export_bundle(paths, "tiny", tmp_path / "a")
    b = export_bundle(paths, "tiny", tmp_path / "b")
    assert a.name == b.name


def test_sha256_mismatch(paths: Paths, tmp_path: Path) -> None:
    make_image(paths)
    bundle = export_bundle(paths, "tiny", tmp_path / "out")
    with pytest.raises(OperationFailed, match="sha256 mismatch"):
        asyncio.run(import_bundle(paths, bundle, "0" * 64, name="other"))
    assert leftovers(paths) == [] and not image_dir(paths, "other").exists()


@pytest.mark.parametrize("sha", ["", "xyz", "a" * 63, "g" * 64])
def test_bad_sha256_argument(paths: Paths, tmp_path: Path, sha: str) -> None:
    with pytest.raises(InvalidArgument, match="64 hex"):
        asyncio.run(import_bundle(paths, tmp_path / "x.tar.zst", sha))


def test_missing_file(paths: Paths, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="does not exist"):
        asyncio.run(import_bundle(paths, tmp_path / "nope.tar.zst", "a" * 64))
    assert leftovers(paths) == []


def test_export_refuses_corrupted_image(paths: Paths, tmp_path: Path) -> None:
    make_image(paths)
    with (image_dir(paths, "tiny") / "rootfs.ext4").open("r+b") as f:
        f.seek(4096 * 3)
        f.write(b"corrupt")
    with pytest.raises(OperationFailed, match="corrupted"):
        export_bundle(paths, "tiny", tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


# ---- hand-made bad bundles ---------------------------------------------------------------

Member = Callable[[tarfile.TarFile], None]


def _file(name: str, data: bytes) -> Member:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return add


def _special(name: str, kind: bytes, linkname: str = "") -> Member:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, linkname
        tar.addfile(info)
    return add


def _bundle(path: Path, members: list[Member]) -> tuple[Path, str]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for add in members:
            add(tar)
    path.write_bytes(zstandard.ZstdCompressor().compress(raw.getvalue()))
    return path, sha256_file(path)


def _good_members(paths: Paths) -> tuple[Member, Member, ImageManifest]:
    m = make_image(paths, "src")
    d = image_dir(paths, "src")
    rootfs = _file("rootfs.ext4", (d / "rootfs.ext4").read_bytes())
    manifest = _file("manifest.json", (d / "manifest.json").read_bytes())
    delete_image(paths, "src")
    return manifest, rootfs, m


def _bad_manifest(m: ImageManifest, **changes: object) -> Member:
    data = msgspec.to_builtins(m)
    data.update(changes)
    return _file("manifest.json", msgspec.json.encode(data))


BAD: dict[str, tuple[Callable[[Member, Member, ImageManifest], list[Member]], str]] = {
    "extra member": (lambda mf, rf, m: [mf, rf, _file("extra.txt", b"x")], "unexpected"),
    "dotdot": (lambda mf, rf, m: [mf, rf, _file("../evil", b"x")], "escapes"),
    "dotdot inside": (lambda mf, rf, m: [_file("a/../../rootfs.ext4", b"x")], "escapes"),
    "absolute": (lambda mf, rf, m: [_file("/etc/passwd", b"x"), mf, rf], "escapes"),
    "symlink": (lambda mf, rf, m: [_special("rootfs.ext4", tarfile.SYMTYPE, "/etc/passwd")],
                "symlink"),
    "hardlink": (lambda mf, rf, m: [mf, _special("rootfs.ext4", tarfile.LNKTYPE, "manifest.json")],
                 "hard link"),
    "char device": (lambda mf, rf, m: [_special("rootfs.ext4", tarfile.CHRTYPE)], "device"),
    "block device": (lambda mf, rf, m: [_special("rootfs.ext4", tarfile.BLKTYPE)], "device"),
    "fifo": (lambda mf, rf, m: [_special("manifest.json", tarfile.FIFOTYPE)], "device or fifo"),
    "directory": (lambda mf, rf, m: [_special("rootfs.ext4", tarfile.DIRTYPE)], "directory"),
    "duplicate": (lambda mf, rf, m: [mf, rf, rf], "twice"),
    "no rootfs": (lambda mf, rf, m: [mf], "lacks rootfs.ext4"),
    "empty": (lambda mf, rf, m: [], "lacks"),
    "manifest not json": (lambda mf, rf, m: [_file("manifest.json", b"{nope"), rf], "invalid"),
    "manifest wrong sha": (lambda mf, rf, m: [_bad_manifest(m, sha256="0" * 64), rf],
                           "does not match"),
    "manifest wrong size": (lambda mf, rf, m: [_bad_manifest(m, size=12), rf], "size"),
    "manifest bad name": (lambda mf, rf, m: [_bad_manifest(m, name="../x"), rf], "invalid"),
    "manifest missing field": (lambda mf, rf, m: [_file("manifest.json", b'{"name": "x"}'), rf],
                               "invalid"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_bundles(paths: Paths, tmp_path: Path, case: str) -> None:
    build, match = BAD[case]
    mf, rf, m = _good_members(paths)
    bundle, sha = _bundle(tmp_path / "bad.tar.zst", build(mf, rf, m))
    with pytest.raises((InvalidArgument, OperationFailed), match=match) as err:
        asyncio.run(import_bundle(paths, bundle, sha))
    assert "\n" not in str(err.value)
    assert list_images(paths) == [] and leftovers(paths) == []


def test_dot_slash_names_and_root_dir_are_accepted(paths: Paths, tmp_path: Path) -> None:
    mf, rf, m = _good_members(paths)

    def renamed(member: Member, new: str) -> Member:
        def add(tar: tarfile.TarFile) -> None:
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as t:
                member(t)
            inner.seek(0)
            with tarfile.open(fileobj=inner) as t:
                info = t.getmembers()[0]
                data = t.extractfile(info).read()  # type: ignore[union-attr]
            info.name = new
            tar.addfile(info, io.BytesIO(data))
        return add

    members = [_special(".", tarfile.DIRTYPE), renamed(mf, "./manifest.json"),
               renamed(rf, "./rootfs.ext4")]
    bundle, sha = _bundle(tmp_path / "ok.tar.zst", members)
    got = asyncio.run(import_bundle(paths, bundle, sha))
    assert got.sha256 == m.sha256


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_stream(paths: Paths, tmp_path: Path, damage: str) -> None:
    make_image(paths)
    good = export_bundle(paths, "tiny", tmp_path / "out")
    bad = tmp_path / "bad.tar.zst"
    data = good.read_bytes()
    bad.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not zstd" * 100)
    delete_image(paths, "tiny")
    with pytest.raises(OperationFailed) as err:
        asyncio.run(import_bundle(paths, bad, sha256_file(bad)))
    assert "\n" not in str(err.value)
    assert list_images(paths) == [] and leftovers(paths) == []


def test_manifest_helpers(paths: Paths) -> None:
    make_image(paths, "one")
    (paths.images_dir / ".staging-two-1234").mkdir()
    (paths.images_dir / "broken").mkdir()
    assert [m.name for m in list_images(paths)] == ["one"]
    assert get_image(paths, "one").name == "one"
    with pytest.raises(NotFound, match="did you mean one"):
        get_image(paths, "onee")
    delete_image(paths, "one")
    assert not image_dir(paths, "one").exists()
    with pytest.raises(NotFound):
        delete_image(paths, "one")
