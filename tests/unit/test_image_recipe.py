"""Recipe build plumbing without the network: argv, slimming, all-or-nothing staging."""

from __future__ import annotations

import asyncio
import io
import os
import tarfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from banger.debian.mirror import Mirror
from banger.errors import Conflict, OperationFailed
from banger.guest import GuestFile
from banger.images import ext4, recipe
from banger.images.catalog import RecipeEntry, lookup
from banger.images.manifest import image_dir, list_images
from banger.paths import Paths, resolve_paths

MIRROR = Mirror("http://mirror.invalid/debian", "test")
FILES = [GuestFile("/usr/local/lib/banger/init", b"#!/bin/sh\n", 0o755)]


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    p = resolve_paths({"BANGER_HOME": str(tmp_path / "home")})
    p.ensure()
    return p


def slim_entry() -> RecipeEntry:
    entry = lookup("debian-bookworm-slim")
    assert isinstance(entry, RecipeEntry)
    return entry


def test_mmdebstrap_argv(tmp_path: Path) -> None:
    argv = recipe.mmdebstrap_argv(slim_entry(), MIRROR, tmp_path / "bootstrap.tar")
    assert argv[0] == "mmdebstrap" and "--variant=minbase" in argv and "--format=tar" in argv
    assert argv[-3:] == ["bookworm", str(tmp_path / "bootstrap.tar"), MIRROR.url]
    include = next(a for a in argv if a.startswith("--include="))
    assert "python3" in include and "systemd" not in include
    assert "--dpkgopt=path-exclude=/usr/share/doc/*" in argv


@pytest.mark.parametrize("euid, mode", [(0, "--mode=root"), (1000, "--mode=unshare")])
def test_mmdebstrap_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, euid: int,
                         mode: str) -> None:
    """A normal user bootstraps in unshare mode (subordinate ids), never 'auto' (fakechroot)."""
    monkeypatch.setattr(os, "geteuid", lambda: euid)
    assert mode in recipe.mmdebstrap_argv(slim_entry(), MIRROR, tmp_path / "b.tar")


def test_missing_newuidmap_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(recipe, "newuidmap_found", lambda: False)
    with pytest.raises(OperationFailed, match=r"needs newuidmap; install it \(apt-get install "
                       r"uidmap\)"):
        recipe.bootstrap_argv(slim_entry(), MIRROR, tmp_path / "b.tar")


def test_slim_and_installed_packages(tmp_path: Path) -> None:
    root = tmp_path
    for d in ("var/lib/apt/lists/partial", "var/cache/apt/archives/partial", "var/log/apt",
              "usr/share/doc/git", "var/lib/dpkg"):
        (root / d).mkdir(parents=True)
    (root / "var/lib/apt/lists/x_Packages").write_text("big")
    (root / "var/cache/apt/pkgcache.bin").write_text("big")
    (root / "var/cache/apt/archives/x.deb").write_text("big")
    (root / "usr/share/doc/git/README").write_text("doc")
    (root / "var/lib/dpkg/status").write_text(
        "Package: git\nStatus: install ok installed\nVersion: 1:2.39\n\n"
        "Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n\n"
        "Package: bash\nStatus: install ok installed\nVersion: 5.2\nDescription: x\n more\n"
    )
    recipe.slim(root)
    assert list((root / "var/lib/apt/lists").iterdir()) == [root / "var/lib/apt/lists/partial"]
    assert not (root / "var/cache/apt/pkgcache.bin").exists()
    assert not (root / "var/cache/apt/archives/x.deb").exists()
    assert not (root / "usr/share/doc/git").exists()
    assert "path-exclude" in (root / "etc/dpkg/dpkg.cfg.d/banger-slim").read_text()
    assert recipe.installed_packages(root) == ["bash=5.2", "git=1:2.39"]


def _member(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, uid: int = 0,
            gid: int = 0, data: bytes = b"") -> tuple[tarfile.TarInfo, bytes]:
    m = tarfile.TarInfo(name)
    m.type, m.mode, m.uid, m.gid, m.size = kind, mode, uid, gid, len(data)
    if kind == tarfile.CHRTYPE:
        m.devmajor, m.devminor = 1, 3
    return m, data


# What mmdebstrap's tarball holds that a normal user cannot make on disk: other owners, a
# setgid file of group shadow (42), a device node.
BOOTSTRAP = [
    _member("./", tarfile.DIRTYPE, 0o755),
    _member("./dev/", tarfile.DIRTYPE, 0o755),
    _member("./dev/null", tarfile.CHRTYPE, 0o666),
    _member("./etc/", tarfile.DIRTYPE, 0o755),
    _member("./etc/os-release", data=b"ID=debian\n"),
    _member("./etc/shadow", mode=0o640, gid=42, data=b"root:*::0:99999:7:::\n"),
    _member("./usr/", tarfile.DIRTYPE, 0o755),
    _member("./usr/bin/", tarfile.DIRTYPE, 0o755),
    _member("./usr/bin/chage", mode=0o2755, gid=42, data=b"#!/bin/sh\n"),
    _member("./usr/bin/passwd", mode=0o4755, data=b"#!/bin/sh\n"),
    _member("./var/", tarfile.DIRTYPE, 0o755),
    _member("./var/mail/", tarfile.DIRTYPE, 0o2775, gid=8),
    _member("./var/lib/", tarfile.DIRTYPE, 0o755),
    _member("./var/lib/dpkg/", tarfile.DIRTYPE, 0o755),
    _member("./var/lib/dpkg/status", data=b""),
]


def _fake_bootstrap(fail: BaseException | None) -> Callable[[RecipeEntry, Mirror, Path], Awaitable[None]]:
    async def fake(entry: RecipeEntry, mirror: Mirror, tarball: Path) -> None:
        with tarfile.open(tarball, "w", format=tarfile.GNU_FORMAT) as tar:
            for m, data in BOOTSTRAP:
                tar.addfile(m, io.BytesIO(data))
        if fail is not None:
            raise fail
    return fake


def _stat(img: Path, path: str) -> str:
    return asyncio.run(ext4.stat_path(img, path))


def test_build_with_fake_bootstrap(paths: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recipe, "bootstrap", _fake_bootstrap(None))
    stages: list[str] = []
    m = asyncio.run(recipe.build_recipe(slim_entry(), paths, MIRROR,
                                        lambda s, f=None, msg="": stages.append(s), files=FILES))
    assert m.name == "debian-bookworm-slim" and m.kernel == "debian-bookworm-cloud"
    assert m.size >= 1 << 30 and not m.systemd and m.guest_files
    assert sorted(p.name for p in image_dir(paths, m.name).iterdir()) == [
        "manifest.json", "rootfs.ext4"]
    for stage in ("bootstrap", "customise", "inject", "mkfs", "checksum"):
        assert stage in stages
    assert [p.name for p in paths.images_dir.iterdir()] == [m.name]
    img = image_dir(paths, m.name) / "rootfs.ext4"
    # Owned as the tarball says, whoever built it (root or a normal user).
    assert "User:     0   Group:    42" in _stat(img, "/etc/shadow")
    assert "Mode:  0640" in _stat(img, "/etc/shadow")
    assert "Mode:  02755" in _stat(img, "/usr/bin/chage")
    assert "Group:    42" in _stat(img, "/usr/bin/chage")
    assert "Mode:  04755" in _stat(img, "/usr/bin/passwd")
    assert "User:     0   Group:     8" in _stat(img, "/var/mail")
    assert "Mode:  02775" in _stat(img, "/var/mail")
    null = _stat(img, "/dev/null")
    assert "Type: character special" in null and "Mode:  0666" in null
    assert "Device major/minor number: 01:03" in null
    for f in FILES:
        assert "User:     0   Group:     0" in _stat(img, f.path)
    with pytest.raises(Conflict, match="already exists"):
        asyncio.run(recipe.build_recipe(slim_entry(), paths, MIRROR, files=FILES))


@pytest.mark.parametrize("exc", [OperationFailed("mmdebstrap failed"), asyncio.CancelledError()])
def test_failed_build_leaves_nothing(paths: Paths, monkeypatch: pytest.MonkeyPatch,
                                     exc: BaseException) -> None:
    monkeypatch.setattr(recipe, "bootstrap", _fake_bootstrap(exc))
    with pytest.raises(type(exc)):
        asyncio.run(recipe.build_recipe(slim_entry(), paths, MIRROR, files=FILES))
    assert list(paths.images_dir.iterdir()) == [] and list_images(paths) == []


def test_unreachable_mirror_is_one_line(paths: Paths) -> None:
    mirror = Mirror("http://127.0.0.1:9/debian", "test")
    with pytest.raises(OperationFailed) as err:
        asyncio.run(recipe.build_recipe(slim_entry(), paths, mirror, files=FILES))
    assert "\n" not in str(err.value) and "127.0.0.1:9" in str(err.value)
    assert list(paths.images_dir.iterdir()) == []
