"""Build debian-bookworm-slim from the real Debian mirror, inspect it, ship it as a bundle over HTTP.

The built image is cached under ${BANGER_TEST_CACHE:-~/.cache/banger-test}, keyed on the recipe
and the guest files, so only the first run (or a change) pays for the build.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import http.server
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from banger.debian.mirror import resolve_mirror
from banger.errors import BangerError
from banger.guest import INIT_PATH, GuestFile, guest_files, guest_files_digest
from banger.images import ext4
from banger.images.bundle import export_bundle, import_bundle
from banger.images.catalog import RecipeEntry, lookup
from banger.images.inject import files_digest
from banger.images.manifest import (
    ImageManifest,
    get_image,
    image_dir,
    list_images,
    read_manifest,
    sha256_file,
)
from banger.images.recipe import build_recipe
from banger.paths import Paths, resolve_paths
from banger.runner import run

pytestmark = pytest.mark.network

NAME = "debian-bookworm-slim"


def cache_root() -> Path:
    default = Path.home() / ".cache" / "banger-test"
    return Path(os.environ.get("BANGER_TEST_CACHE") or default) / "images"


def cache_key(entry: RecipeEntry) -> str:
    recipe_src = (Path(__file__).parents[2] / "src/banger/images/recipe.py").read_bytes()
    inject_src = (Path(__file__).parents[2] / "src/banger/images/inject.py").read_bytes()
    h = hashlib.sha256(msgspec.json.encode(entry) + recipe_src + inject_src)
    return f"{entry.name}-{guest_files_digest()}-{h.hexdigest()[:12]}"


def _copy_image(src: Path, dest: Path) -> None:
    dest.mkdir(parents=True)
    run(["cp", "--sparse=always", src / "rootfs.ext4", dest / "rootfs.ext4"])
    shutil.copy2(src / "manifest.json", dest / "manifest.json")


def _build_or_restore(paths: Paths) -> tuple[ImageManifest, float | None]:
    entry = lookup(NAME)
    assert isinstance(entry, RecipeEntry)
    cached = cache_root() / cache_key(entry)
    if (cached / "manifest.json").is_file():
        _copy_image(cached, image_dir(paths, NAME))
        return read_manifest(image_dir(paths, NAME) / "manifest.json"), None
    t0 = time.monotonic()
    manifest = asyncio.run(build_recipe(entry, paths, resolve_mirror("")))
    took = time.monotonic() - t0
    tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    _copy_image(image_dir(paths, NAME), tmp)
    (tmp / "build-seconds").write_text(f"{took:.1f}\n")
    for stale in cached.parent.glob(f"{entry.name}-*"):
        if stale != tmp:  # older recipe or guest files: never used again
            shutil.rmtree(stale, ignore_errors=True)
    os.replace(tmp, cached)
    return manifest, took


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Paths, ImageManifest]]:
    home = tmp_path_factory.mktemp("home")
    paths = resolve_paths({"BANGER_HOME": str(home)})
    paths.ensure()
    manifest, took = _build_or_restore(paths)
    if took is not None:
        print(f"\n{NAME} cold build: {took:.1f}s")
    yield paths, manifest


def test_manifest(built: tuple[Paths, ImageManifest]) -> None:
    paths, m = built
    img = image_dir(paths, NAME) / "rootfs.ext4"
    assert m.name == NAME and m.distro == "debian" and m.release == "bookworm"
    assert m.arch == "amd64" and m.kernel == "debian-bookworm-cloud" and not m.systemd
    assert m.sha256 == sha256_file(img) and m.size == img.stat().st_size >= 1 << 30
    # The digest describes exactly the files inside the image.
    inside = [GuestFile(f.path, asyncio.run(ext4.read_text(img, f.path)).encode(), f.mode)
              for f in guest_files()]
    assert m.guest_files == files_digest(inside)
    assert m.packages == list(lookup(NAME).packages)  # type: ignore[union-attr]
    names = {p.split("=")[0] for p in m.installed}
    assert {"python3", "git", "iproute2", "e2fsprogs"} <= names and "systemd" not in names
    assert [x.name for x in list_images(paths)] == [NAME]
    assert get_image(paths, NAME) == m


def test_filesystem(built: tuple[Paths, ImageManifest]) -> None:
    paths, _ = built
    img = image_dir(paths, NAME) / "rootfs.ext4"
    run(["e2fsck", "-fn", img])  # structurally sound
    assert "banger-root" in run(["dumpe2fs", "-h", img]).stdout
    for f in guest_files():
        st = asyncio.run(ext4.stat_path(img, f.path))
        assert "Type: regular" in st and f"Mode:  0{f.mode:o}" in st, f.path
        assert "User:     0   Group:     0" in st, f.path
    init = asyncio.run(ext4.read_text(img, INIT_PATH))
    assert init.startswith("#!/bin/sh") and "banger-init" in init
    assert asyncio.run(ext4.read_text(img, "/etc/machine-id")) == ""
    assert "banger" in asyncio.run(ext4.read_text(img, "/etc/fstab"))
    asyncio.run(ext4.stat_path(img, "/usr/bin/python3"))
    asyncio.run(ext4.stat_path(img, "/usr/sbin/resize2fs"))
    listing = run(["debugfs", "-R", "ls /var/lib/apt/lists", img]).stdout
    assert "_Packages" not in listing  # apt lists were dropped


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    handler = functools.partial(_Quiet, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_bundle_over_http(built: tuple[Paths, ImageManifest], http_dir: tuple[Path, str]) -> None:
    paths, m = built
    served, base = http_dir
    t0 = time.monotonic()
    bundle = export_bundle(paths, NAME, served)
    export_s = time.monotonic() - t0
    sha = sha256_file(bundle)
    other = resolve_paths({"BANGER_HOME": str(served / "other-home")})
    other.ensure()
    t0 = time.monotonic()
    got = asyncio.run(import_bundle(other, f"{base}/{bundle.name}", sha, name="slim-copy"))
    import_s = time.monotonic() - t0
    print(f"\nbundle {bundle.stat().st_size >> 20} MiB: export {export_s:.1f}s, "
          f"import over HTTP {import_s:.1f}s")
    assert got.name == "slim-copy" and got.sha256 == m.sha256
    assert sha256_file(image_dir(other, "slim-copy") / "rootfs.ext4") == m.sha256
    # A wrong pin over HTTP: refused, nothing left behind.
    with pytest.raises(BangerError) as err:
        asyncio.run(import_bundle(other, f"{base}/{bundle.name}", "0" * 64, name="bad"))
    assert "\n" not in str(err.value)
    with pytest.raises(BangerError):
        asyncio.run(import_bundle(other, f"{base}/missing.tar.zst", sha, name="bad"))
    assert [x.name for x in list_images(other)] == ["slim-copy"]
    assert not [p for p in other.images_dir.iterdir() if p.name.startswith(".")]


STUB_AGENT = """\
import os


def main(argv):
    with open("/var/lib/banger/agent-ran", "w") as f:
        f.write(" ".join(argv) + f" pid={os.getpid()}\\n")
    return 0
"""


def _has_cap_sys_resource() -> bool:
    status = Path("/proc/self/status").read_text()
    eff = next(line for line in status.splitlines() if line.startswith("CapEff:"))
    return bool(int(eff.split()[1], 16) >> 24 & 1)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for loop mounts and namespaces")
def test_init_wrapper_runs_as_pid1(built: tuple[Paths, ImageManifest], tmp_path: Path) -> None:
    """Run the real init wrapper as PID 1 of fresh namespaces chrooted into the built image."""
    paths, _ = built
    img = tmp_path / "root.ext4"
    run(["cp", "--sparse=always", image_dir(paths, NAME) / "rootfs.ext4", img])
    os.truncate(img, (1 << 30) + (256 << 20))  # a bigger "disk": the wrapper must grow the fs
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    run(["mount", "-o", "loop", img, mnt])
    try:
        (mnt / "usr/local/lib/banger/agent/server.py").write_text(STUB_AGENT)  # the test copy only
        cmdline = tmp_path / "cmdline"
        cmdline.write_text("console=ttyS0 root=/dev/vda banger.hostname=wrapped-vm quiet\n")
        script = (f"mount -t proc proc {mnt}/proc && mount --bind {cmdline} {mnt}/proc/cmdline"
                  f" && exec chroot {mnt} /usr/local/lib/banger/init")
        t0 = time.monotonic()
        res = run(["unshare", "--pid", "--fork", "--kill-child", "--mount", "--uts", "--ipc",
                   "sh", "-c", script], timeout=60)
        took = time.monotonic() - t0
        for stage in ("mounts", "root", "agent", "exec agent as PID 1"):
            assert f"banger-init: {stage}" in res.stdout, res.stdout
        assert (mnt / "var/lib/banger/agent-ran").read_text().startswith("--pid1 pid=1")
        assert (mnt / "etc/hostname").read_text() == "wrapped-vm\n"
        hosts = (mnt / "etc/hosts").read_text()
        assert "127.0.1.1\twrapped-vm" in hosts and "localhost" in hosts
        assert "127.0.1.1\tbanger" not in hosts
        assert "banger-init: growing root filesystem" in res.stdout
        marker = mnt / "var/lib/banger/grown-sectors"
        if _has_cap_sys_resource():
            assert int(marker.read_text()) * 512 == img.stat().st_size
            assert shutil.disk_usage(mnt).total > 1 << 30  # resize2fs grew it online
        else:  # online resize needs CAP_SYS_RESOURCE; a failed grow must be retried next boot
            assert "resize2fs /dev/" in res.stdout and not marker.exists()
        print(f"\ninit wrapper to agent exec (chroot, no VM): {took * 1000:.0f} ms")
    finally:
        run(["umount", "-l", mnt], check=False)


def test_cancelled_build_leaves_nothing(tmp_path: Path) -> None:
    """Cancel a real bootstrap midway: no staging dir, no mounts, no processes left."""
    from banger.images.staging import mounts_under

    paths = resolve_paths({"BANGER_HOME": str(tmp_path / "home")})
    paths.ensure()
    entry = lookup(NAME)
    assert isinstance(entry, RecipeEntry)
    stages: list[str] = []

    async def go() -> None:
        task = asyncio.create_task(build_recipe(entry, paths, resolve_mirror(""),
                                                lambda s, f=None, m="": stages.append(s)))
        for _ in range(600):  # the dangerous moment: /proc, /sys, /dev mounted in the chroot
            await asyncio.sleep(0.1)
            if _bootstrap_mounts():
                break
        mounted = _bootstrap_mounts()
        await asyncio.sleep(1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert mounted, "the bootstrap never mounted anything; the test cancelled too late"

    asyncio.run(go())
    assert stages[:1] == ["bootstrap"] and "mkfs" not in stages  # cancelled mid-bootstrap
    assert list(paths.images_dir.iterdir()) == []
    assert mounts_under(paths.images_dir) == [] and _bootstrap_mounts() == []
    assert not list(Path(tempfile.gettempdir()).glob(f"banger-bootstrap-{os.getpid()}-*"))


def _bootstrap_mounts() -> list[Path]:
    """Mounts in this process's bootstrap work dirs (mmdebstrap's tree lives there)."""
    from banger.images.staging import mounts_under

    tmp = Path(tempfile.gettempdir())
    return [m for d in tmp.glob(f"banger-bootstrap-{os.getpid()}-*") for m in mounts_under(d)]
