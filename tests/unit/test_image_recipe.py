"""Recipe build plumbing without the network: argv, slimming, all-or-nothing staging."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from banger.debian.mirror import Mirror
from banger.errors import Conflict, OperationFailed
from banger.guest import GuestFile
from banger.images import recipe
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
    argv = recipe.mmdebstrap_argv(slim_entry(), MIRROR, tmp_path / "root")
    assert argv[0] == "mmdebstrap" and "--variant=minbase" in argv
    assert argv[-3:] == ["bookworm", str(tmp_path / "root"), MIRROR.url]
    include = next(a for a in argv if a.startswith("--include="))
    assert "python3" in include and "systemd" not in include
    assert "--dpkgopt=path-exclude=/usr/share/doc/*" in argv


def test_debootstrap_argv(tmp_path: Path) -> None:
    argv = recipe.debootstrap_argv(slim_entry(), MIRROR, tmp_path)
    assert argv[0] == "debootstrap" and argv[-1] == MIRROR.url


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


def _fake_bootstrap(fail: BaseException | None) -> Callable[[RecipeEntry, Mirror, Path], Awaitable[None]]:
    async def fake(entry: RecipeEntry, mirror: Mirror, target: Path) -> None:
        (target / "etc").mkdir(parents=True)
        (target / "var/lib/dpkg").mkdir(parents=True)
        (target / "var/lib/dpkg/status").write_text("")
        (target / "etc/os-release").write_text("ID=debian\n")
        if fail is not None:
            raise fail
    return fake


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
