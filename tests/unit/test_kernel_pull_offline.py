"""pull_kernel end to end without the network: bundles over 127.0.0.1, a fake Debian mirror."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import lzma
import struct
import tarfile
import threading
from collections.abc import Iterator, Sequence
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import zstandard

from banger.debian.mirror import Mirror
from banger.errors import OperationFailed
from banger.kernels.catalog import CatalogEntry
from banger.kernels.initramfs import read_cpio
from banger.kernels.manifest import list_kernels, verify_kernel
from banger.kernels.pull import pull_kernel
from banger.paths import Paths

VERSION = "6.1.0-99-test"
ELF = b"\x7fELF\x02\x01\x01" + b"Linux version 6.1.0-77-elf (x) " + bytes(4096)


def bzimage(elf: bytes = ELF) -> bytes:
    payload = gzip.compress(elf) + struct.pack("<I", len(elf))
    img = bytearray(1024)
    img[0x1F1] = 1
    img[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", img, 0x206, 0x020F)
    struct.pack_into("<H", img, 0x20E, 0x100)
    img[0x300 : 0x300 + len(VERSION)] = VERSION.encode()
    struct.pack_into("<II", img, 0x248, 0, len(payload))
    return bytes(img) + payload


def tar_bytes(members: Sequence[tuple[str, bytes | tarfile.TarInfo]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            if isinstance(data, tarfile.TarInfo):
                tar.addfile(data)
                continue
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def special(name: str, kind: bytes, link: str = "") -> tuple[str, tarfile.TarInfo]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return name, info


def zst(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path / "c", tmp_path / "state", tmp_path / "cache", tmp_path / "r")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    root = tmp_path_factory.mktemp("www")
    handler = partial(SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def bundle_entry(root: Path, base: str, name: str, blob: bytes) -> CatalogEntry:
    (root / f"{name}.tar.zst").write_bytes(blob)
    return CatalogEntry(name=name, kind="bundle", url=f"{base}/{name}.tar.zst",
                        sha256=hashlib.sha256(blob).hexdigest())


def assert_nothing_left(paths: Paths) -> None:
    leftovers = list(paths.kernels_dir.iterdir()) if paths.kernels_dir.exists() else []
    assert leftovers == []


def test_bundle_pull_over_http(paths: Paths, served: tuple[Path, str]) -> None:
    blob = zst(tar_bytes([("./vmlinux", ELF), ("./bzImage", bzimage()), ("./initrd", b"cpio")]))
    entry = bundle_entry(*served, "bundle-ok", blob)
    m = asyncio.run(pull_kernel(entry, paths, None))
    assert m.kernel_version == VERSION and set(m.files) == {"vmlinuz", "vmlinux", "initramfs.img"}
    assert m.path(paths, "vmlinux").read_bytes() == ELF  # type: ignore[union-attr]
    assert verify_kernel(paths, m) == []
    assert [k.name for k in list_kernels(paths)] == ["bundle-ok"]
    again = asyncio.run(pull_kernel(entry, paths, None))  # re-pull replaces in place
    assert again.files == m.files and len(list(paths.kernels_dir.iterdir())) == 1


def test_bundle_with_only_bzimage_gets_a_vmlinux(paths: Paths, served: tuple[Path, str]) -> None:
    entry = bundle_entry(*served, "bundle-bz", zst(tar_bytes([("bzImage", bzimage())])))
    m = asyncio.run(pull_kernel(entry, paths, None))
    assert m.path(paths, "vmlinux").read_bytes() == ELF  # type: ignore[union-attr]
    assert "initramfs.img" not in m.files


def test_bundle_wrong_sha256(paths: Paths, served: tuple[Path, str]) -> None:
    entry = bundle_entry(*served, "bundle-sha", zst(tar_bytes([("vmlinux", ELF)])))
    bad = CatalogEntry(name=entry.name, kind="bundle", url=entry.url, sha256="0" * 64)
    with pytest.raises(OperationFailed, match="sha256"):
        asyncio.run(pull_kernel(bad, paths, None))
    assert_nothing_left(paths)


BAD_BUNDLES: dict[str, list[tuple[str, bytes | tarfile.TarInfo]]] = {
    "extra": [("vmlinux", ELF), ("README", b"hi")],
    "dotdot": [("../vmlinux", ELF)],
    "absolute": [("/vmlinux", ELF)],
    "symlink": [special("vmlinux", tarfile.SYMTYPE, "/etc/passwd")],
    "device": [special("vmlinux", tarfile.CHRTYPE)],
    "empty": [],
    "not-elf": [("vmlinux", b"MZ not an elf")],
}


@pytest.mark.parametrize("case", sorted(BAD_BUNDLES))
def test_bad_bundles_leave_nothing(paths: Paths, served: tuple[Path, str], case: str) -> None:
    entry = bundle_entry(*served, f"bad-{case}", zst(tar_bytes(BAD_BUNDLES[case])))
    with pytest.raises(OperationFailed) as err:
        asyncio.run(pull_kernel(entry, paths, None))
    assert "\n" not in str(err.value)
    assert_nothing_left(paths)


def test_bundle_that_is_not_zstd(paths: Paths, served: tuple[Path, str]) -> None:
    entry = bundle_entry(*served, "bad-format", b"plain bytes, not zstd")
    with pytest.raises(OperationFailed, match="not a valid"):
        asyncio.run(pull_kernel(entry, paths, None))
    assert_nothing_left(paths)


# --- a fake Debian mirror on disk -------------------------------------------------------


def ar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    out = bytearray(b"!<arch>\n")
    for name, data in members:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
        out += data + (b"\n" if len(data) % 2 else b"")
    return bytes(out)


def deb(files: list[tuple[str, bytes]]) -> bytes:
    return ar_bytes([("debian-binary", b"2.0\n"), ("data.tar.xz", lzma.compress(tar_bytes(files)))])


def fake_ko() -> bytes:
    return b"\x7fELF not really a module"  # no sections: no dependencies


def build_mirror(root: Path) -> Mirror:
    mods = f"./lib/modules/{VERSION}/kernel/drivers"
    debs = {
        "linux-image-cloud-amd64": (deb([]), f"linux-image-{VERSION}"),
        f"linux-image-{VERSION}": (deb([
            (f"./boot/vmlinuz-{VERSION}", bzimage()),
            (f"./boot/System.map-{VERSION}", b"map"),
            (f"{mods}/virtio/virtio_ring.ko", fake_ko()),
            (f"{mods}/block/virtio_blk.ko", fake_ko()),
            (f"{mods}/char/hw_random/virtio-rng.ko", fake_ko()),
            (f"{mods}/scsi/unrelated.ko", fake_ko()),
        ]), ""),
        "busybox-static": (deb([("./bin/busybox", b"\x7fELF busybox")]), ""),
    }
    stanzas = []
    for name, (blob, depends) in debs.items():
        filename = f"pool/main/x/{name}_1_amd64.deb"
        (root / filename).parent.mkdir(parents=True, exist_ok=True)
        (root / filename).write_bytes(blob)
        stanzas.append(f"Package: {name}\nVersion: 1\nFilename: {filename}\nSize: {len(blob)}\n"
                       f"SHA256: {hashlib.sha256(blob).hexdigest()}\nDepends: {depends}\n")
    index = lzma.compress("\n".join(stanzas).encode())
    dists = root / "dists" / "fakesuite"
    (dists / "main/binary-amd64").mkdir(parents=True)
    (dists / "main/binary-amd64/Packages.xz").write_bytes(index)
    (dists / "Release").write_text(
        f"Codename: fakesuite\nSHA256:\n {hashlib.sha256(index).hexdigest()} {len(index)} "
        "main/binary-amd64/Packages.xz\n")
    return Mirror(root.as_uri(), "test", allow_unsigned=True)  # signatures: test_debian_archive


def test_debian_pull_from_fake_mirror(tmp_path: Path, paths: Paths,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("banger.debian.archive.DEBIAN_KEYRING", tmp_path / "no-keyring")
    mirror = build_mirror(tmp_path / "mirror")
    entry = CatalogEntry(name="fake-cloud", kind="debian", suite="fakesuite",
                         metapackage="linux-image-cloud-amd64")
    stages: list[str] = []
    m = asyncio.run(pull_kernel(entry, paths, mirror, lambda s, f=None, msg="": stages.append(s)))
    assert (m.kernel_version, m.package) == (VERSION, f"linux-image-{VERSION}")
    assert m.modules == ["virtio_ring", "virtio_blk", "virtio_rng"]
    assert m.mirror == mirror.url and m.source_url.endswith(f"linux-image-{VERSION}_1_amd64.deb")
    assert {"resolve", "unpack", "vmlinux", "initramfs", "install", "done"} <= set(stages)
    entries = read_cpio(m.path(paths, "initramfs.img"))  # type: ignore[arg-type]
    assert entries["bin/busybox"].data == b"\x7fELF busybox"
    assert f"lib/modules/{VERSION}/kernel/drivers/block/virtio_blk.ko" in entries
    assert not any("unrelated" in n for n in entries)
    assert [p.name for p in paths.kernels_dir.iterdir()] == ["fake-cloud"]
    assert verify_kernel(paths, m) == []
