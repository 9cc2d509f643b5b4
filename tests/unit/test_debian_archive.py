"""Debian archive access against a fake mirror on disk (file://), no network needed."""

from __future__ import annotations

import asyncio
import hashlib
import io
import lzma
import os
import socket
import tarfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from banger.debian import archive as archive_module
from banger.debian.archive import (
    DebianArchive,
    Stanza,
    parse_packages,
    parse_release,
    parse_release_date,
    release_verification,
)
from banger.debian.mirror import Mirror
from banger.errors import NotFound, OperationFailed
from banger.paths import Paths
from banger.runner import run, which

SUITE = "testsuite"


def ar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    out = bytearray(b"!<arch>\n")
    for name, data in members:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
        out += data + (b"\n" if len(data) % 2 else b"")
    return bytes(out)


def tiny_deb(payload: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("./bin/tool")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return ar_bytes([("debian-binary", b"2.0\n"), ("data.tar.xz", lzma.compress(buf.getvalue()))])


def stanza_text(name: str, deb: bytes, filename: str, depends: str = "") -> str:
    lines = [f"Package: {name}", "Version: 1.0-1", "Architecture: amd64",
             f"Filename: {filename}", f"Size: {len(deb)}",
             f"SHA256: {hashlib.sha256(deb).hexdigest()}"]
    if depends:
        lines.append(f"Depends: {depends}")
    return "\n".join(lines) + "\n"


def write_release(root: Path, codename: str = SUITE, extra: str = "") -> Path:
    dists = root / "dists" / SUITE
    entries = []
    for p in sorted((dists / "main").rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            rel = p.relative_to(dists).as_posix()
            entries.append(f" {hashlib.sha256(data).hexdigest()} {len(data)} {rel}")
    text = (f"Origin: Test\nSuite: testing\nCodename: {codename}\n{extra}SHA256:\n"
            + "\n".join(entries))
    (dists / "Release").write_text(text + "\n")
    return dists / "Release"


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    root = tmp_path / "mirror"
    demo = tiny_deb(b"demo payload")
    meta = tiny_deb(b"meta")
    pool = root / "pool/main/d/demo"
    pool.mkdir(parents=True)
    (pool / "demo_1.0-1_amd64.deb").write_bytes(demo)
    (pool / "meta_1.0-1_amd64.deb").write_bytes(meta)
    packages = "\n".join([
        stanza_text("demo", demo, "pool/main/d/demo/demo_1.0-1_amd64.deb"),
        stanza_text("meta", meta, "pool/main/d/demo/meta_1.0-1_amd64.deb",
                    "demo (= 1.0-1), other | alt, libc6:any"),
    ])
    index = root / "dists" / SUITE / "main" / "binary-amd64"
    index.mkdir(parents=True)
    (index / "Packages.xz").write_bytes(lzma.compress(packages.encode()))
    write_release(root)
    return root


def paths_for(tmp_path: Path) -> Paths:
    return Paths(tmp_path / "config", tmp_path / "state", tmp_path / "cache", tmp_path / "run")


def archive(tmp_path: Path, mirror: Path, keyring: Path | None = None,
            *, allow_unsigned: bool | None = None) -> DebianArchive:
    """Without a keyring the fake mirror is unsigned: those tests opt out of signatures."""
    unsigned = keyring is None if allow_unsigned is None else allow_unsigned
    return DebianArchive(Mirror(mirror.as_uri(), "test", allow_unsigned=unsigned), SUITE,
                         paths_for(tmp_path), keyring=keyring or tmp_path / "no-keyring.gpg")


def test_lookup_and_fetch(tmp_path: Path, mirror: Path) -> None:
    arc = archive(tmp_path, mirror)
    meta = asyncio.run(arc.lookup("meta"))
    assert meta.depends_names() == ["demo", "other", "libc6"]
    demo = asyncio.run(arc.lookup("demo"))
    deb = asyncio.run(arc.fetch_deb(demo))
    assert deb.read_bytes() == (mirror / demo.filename).read_bytes()
    assert str(tmp_path / "cache" / "debian") in str(deb)


def test_cached_deb_is_reused(tmp_path: Path, mirror: Path) -> None:
    arc = archive(tmp_path, mirror)
    demo = asyncio.run(arc.lookup("demo"))
    first = asyncio.run(arc.fetch_deb(demo))
    (mirror / demo.filename).unlink()  # a second fetch must not need the mirror
    assert asyncio.run(arc.fetch_deb(demo)) == first


def test_indices_are_cached(tmp_path: Path, mirror: Path) -> None:
    asyncio.run(archive(tmp_path, mirror).packages())
    (mirror / "dists" / SUITE / "main/binary-amd64/Packages.xz").unlink()
    assert "demo" in asyncio.run(archive(tmp_path, mirror).packages())


def test_deb_with_wrong_sha256_is_refused(tmp_path: Path, mirror: Path) -> None:
    arc = archive(tmp_path, mirror)
    demo = asyncio.run(arc.lookup("demo"))
    (mirror / demo.filename).write_bytes(tiny_deb(b"tampered!!!!"))  # same size, other bytes
    with pytest.raises(OperationFailed, match="sha256"):
        asyncio.run(arc.fetch_deb(demo))
    assert not list((tmp_path / "cache" / "debian" / "debs").glob("*"))


def test_packages_not_matching_release_is_refused(tmp_path: Path, mirror: Path) -> None:
    index = mirror / "dists" / SUITE / "main/binary-amd64/Packages.xz"
    index.write_bytes(lzma.compress(b"Package: evil\n"))
    with pytest.raises(OperationFailed, match=r"Packages\.xz failed"):
        asyncio.run(archive(tmp_path, mirror).packages())


def test_unknown_package(tmp_path: Path, mirror: Path) -> None:
    with pytest.raises(NotFound, match="nosuch"):
        asyncio.run(archive(tmp_path, mirror).lookup("nosuch"))


def test_release_for_another_suite_is_refused(tmp_path: Path, mirror: Path) -> None:
    write_release(mirror, codename="othersuite")
    text = (mirror / "dists" / SUITE / "Release").read_text().replace("Suite: testing", "Suite: x")
    (mirror / "dists" / SUITE / "Release").write_text(text)
    with pytest.raises(OperationFailed, match="not testsuite"):
        asyncio.run(archive(tmp_path, mirror).release())


def test_unreachable_mirror(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    arc = DebianArchive(Mirror(f"http://127.0.0.1:{port}/debian", "test", allow_unsigned=True),
                        SUITE, paths_for(tmp_path), keyring=tmp_path / "none")
    with pytest.raises(OperationFailed, match="Release failed"):
        asyncio.run(arc.release())


def test_parsers() -> None:
    rel = parse_release("MD5Sum:\n abc 3 x\nSHA256:\n " + "a" * 64 + " 12 main/x\nOther: y\n")
    assert rel == {"main/x": ("a" * 64, 12)}
    idx = parse_packages("Package: a\nVersion: 1\nFilename: f\nSHA256: AB\nSize: 3\n\n"
                         "Package: broken\n")
    assert idx == {"a": Stanza("a", "1", "f", "ab", 3)}


def test_verification_status(tmp_path: Path) -> None:
    status = release_verification(tmp_path / "missing.gpg")
    assert not status.possible and "missing" in status.reason


@pytest.fixture
def signing_key(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path]]:
    if which("gpg") is None or which("gpgv") is None:
        pytest.skip("gpg/gpgv not installed")
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key",
         "banger test <t@example.invalid>", "ed25519", "sign", "never"], env=env)
    keyring = tmp_path / "keyring.gpg"
    run(["gpg", "--batch", "--export", "-o", keyring], env=env)
    yield env, keyring
    run(["gpgconf", "--kill", "all"], env=env, check=False)


def sign(release: Path, env: dict[str, str]) -> None:
    sig = release.with_name("Release.gpg")
    sig.unlink(missing_ok=True)
    run(["gpg", "--batch", "--detach-sign", "-o", sig, release], env=env)


def test_signed_release_verifies(tmp_path: Path, mirror: Path,
                                 signing_key: tuple[dict[str, str], Path]) -> None:
    env, keyring = signing_key
    sign(mirror / "dists" / SUITE / "Release", env)
    assert release_verification(keyring).possible
    entries = asyncio.run(archive(tmp_path, mirror, keyring).release())
    assert "main/binary-amd64/Packages.xz" in entries


def test_tampered_release_fails_signature(tmp_path: Path, mirror: Path,
                                          signing_key: tuple[dict[str, str], Path]) -> None:
    env, keyring = signing_key
    release = mirror / "dists" / SUITE / "Release"
    sign(release, env)
    release.write_text(release.read_text() + "Extra: field\n")
    with pytest.raises(OperationFailed, match="signature check"):
        asyncio.run(archive(tmp_path, mirror, keyring).release())
    assert not list((tmp_path / "cache" / "debian").rglob("Release"))


# Fail closed: a Release that cannot be checked is refused unless the user opted out.

def test_missing_keyring_fails_closed(tmp_path: Path, mirror: Path) -> None:
    arc = archive(tmp_path, mirror, allow_unsigned=False)
    with pytest.raises(OperationFailed) as info:
        asyncio.run(arc.release())
    message = info.value.message
    assert "install debian-archive-keyring" in message and "debian_allow_unsigned" in message
    assert "\n" not in message
    assert not list((tmp_path / "cache" / "debian").rglob("Release"))


def test_missing_gpgv_fails_closed(tmp_path: Path, mirror: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    keyring = tmp_path / "keyring.gpg"
    keyring.write_bytes(b"not used")
    monkeypatch.setattr(archive_module, "which", lambda tool: None)
    with pytest.raises(OperationFailed, match="install gpgv"):
        asyncio.run(archive(tmp_path, mirror, keyring).release())


def test_unsigned_opt_out_still_pins_hashes(tmp_path: Path, mirror: Path) -> None:
    arc = archive(tmp_path, mirror, allow_unsigned=True)
    assert "main/binary-amd64/Packages.xz" in asyncio.run(arc.release())


def test_cached_unverified_release_is_checked_again(
        tmp_path: Path, mirror: Path, signing_key: tuple[dict[str, str], Path]) -> None:
    """A Release cached while unsigned was allowed is not trusted once signatures are required."""
    _, keyring = signing_key
    asyncio.run(archive(tmp_path, mirror, allow_unsigned=True).release())
    with pytest.raises(OperationFailed, match="signature"):
        asyncio.run(archive(tmp_path, mirror, keyring).release())


# Valid-Until: an old, correctly signed Release replayed by a mirror or a network attacker.

def test_expired_release_is_refused(tmp_path: Path, mirror: Path) -> None:
    write_release(mirror, extra="Valid-Until: Sat, 01 Jan 2000 00:00:00 UTC\n")
    with pytest.raises(OperationFailed) as info:
        asyncio.run(archive(tmp_path, mirror).release())
    assert "expired on 2000-01-01 00:00:00 UTC" in info.value.message
    assert "debian_mirror" in info.value.message


def test_signed_expired_release_is_refused(tmp_path: Path, mirror: Path,
                                           signing_key: tuple[dict[str, str], Path]) -> None:
    env, keyring = signing_key
    sign(write_release(mirror, extra="Valid-Until: Sat, 01 Jan 2000 00:00:00 UTC\n"), env)
    with pytest.raises(OperationFailed, match="expired on 2000-01-01"):
        asyncio.run(archive(tmp_path, mirror, keyring).release())


def test_release_valid_until_in_the_future_is_used(tmp_path: Path, mirror: Path) -> None:
    write_release(mirror, extra="Valid-Until: Tue, 01 Jan 2999 00:00:00 UTC\n")
    assert "main/binary-amd64/Packages.xz" in asyncio.run(archive(tmp_path, mirror).release())


@pytest.mark.parametrize("value", ["tomorrow", "Sat, 01 Jan 2999 00:00:00 CET",
                                   "Sat, 31 Feb 2999 00:00:00 UTC", "2999-01-01T00:00:00Z",
                                   "Sat, 01 Jan 2999 25:00:00 UTC", ""])
def test_unparseable_valid_until_is_refused(tmp_path: Path, mirror: Path, value: str) -> None:
    write_release(mirror, extra=f"Valid-Until: {value}\n")
    with pytest.raises(OperationFailed, match="Valid-Until"):
        asyncio.run(archive(tmp_path, mirror).release())


@pytest.mark.fuzz
@given(st.text(max_size=60))
def test_release_dates_parse_strictly(text: str) -> None:
    """Any text either parses to an aware UTC datetime that formats back, or is our error."""
    try:
        when = parse_release_date(text)
    except OperationFailed as exc:
        assert "\n" not in exc.message
        return
    assert when.tzinfo is not None and when.utcoffset() == timedelta(0)
    assert parse_release_date(when.strftime("%a, %d %b %Y %H:%M:%S UTC")) == when


def test_a_release_older_than_the_one_seen_is_refused(tmp_path: Path, mirror: Path) -> None:
    """Without Valid-Until (Debian's main archive), a replayed older Release is still caught."""
    write_release(mirror, extra="Date: Tue, 01 Dec 2026 08:00:00 UTC\n")
    asyncio.run(archive(tmp_path, mirror).release())
    cached = paths_for(tmp_path).cache_dir / "debian"
    for release in cached.rglob("Release"):
        os.utime(release, (0, 0))  # past the reuse window: the next pull fetches again
    write_release(mirror, extra="Date: Sat, 01 Nov 2025 08:00:00 UTC\n")
    with pytest.raises(OperationFailed, match="older than the one already seen"):
        asyncio.run(archive(tmp_path, mirror).release())
    write_release(mirror, extra="Date: Wed, 02 Dec 2026 08:00:00 UTC\n")  # newer: fine
    assert "main/binary-amd64/Packages.xz" in asyncio.run(archive(tmp_path, mirror).release())
