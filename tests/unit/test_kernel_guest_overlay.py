"""The guest-file overlay: its cpio, the cached initrd, and /init's install step run by a real sh."""

from __future__ import annotations

import gzip
import stat
from pathlib import Path

from banger.guest import GUEST_STAMP, GuestFile, files_digest
from banger.kernels.guest_overlay import current_files, initrd_with_guest, overlay_bytes, prune
from banger.kernels.initramfs import init_script, read_cpio
from banger.runner import run

FILES = [GuestFile("/usr/local/lib/banger/agent/core.py", b"NEW = 1\n", 0o644),
         GuestFile("/usr/local/lib/banger/init", b"#!/bin/sh\necho new\n", 0o755)]
DIGEST = files_digest(FILES)


def unpack(blob: bytes, dest: Path) -> None:
    """What the kernel does with the overlay: its newc entries made into a tree."""
    archive = dest.parent / f"{dest.name}.cpio.gz"
    archive.write_bytes(blob)
    for name, entry in read_cpio(archive).items():
        path = dest / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if stat.S_ISDIR(entry.mode):
            path.mkdir(exist_ok=True)
        elif stat.S_ISLNK(entry.mode):
            path.symlink_to(entry.data.decode())
        else:
            path.write_bytes(entry.data)


def install(tmp_path: Path) -> tuple[Path, str]:
    """Run /init's install_guest_files with its absolute paths moved under tmp_path."""
    overlay, root = tmp_path / "initramfs", tmp_path / "root"
    unpack(overlay_bytes(FILES, DIGEST), overlay)
    script = init_script()
    body = script[script.index("install_guest_files() {"):]
    body = body[:body.index("\n}\n") + 3]
    body = body.replace("/banger-guest", f"{overlay}/banger-guest").replace("/newroot", str(root))
    prog = f'say() {{ echo "$*"; }}\nGUEST_STAMP={GUEST_STAMP}\n{body}install_guest_files\n'
    res = run(["sh", "-c", prog], check=False)  # a failed install ends the function non-zero
    return root, res.stdout


def test_overlay_replaces_init_and_carries_files(tmp_path: Path) -> None:
    unpack(overlay_bytes(FILES, DIGEST), tmp_path)
    assert (tmp_path / "init").read_text() == init_script()
    assert (tmp_path / "banger-guest/root/usr/local/lib/banger/agent/core.py").read_bytes() == b"NEW = 1\n"
    assert (tmp_path / "banger-guest/files").read_text().splitlines() == [
        "644 /usr/local/lib/banger/agent/core.py", "755 /usr/local/lib/banger/init"]
    assert (tmp_path / "banger-guest/digest").read_text() == f"{DIGEST}\n"
    assert (tmp_path / "bin/cmp").readlink() == Path("busybox")


def test_install_replaces_stale_files_and_stamps(tmp_path: Path) -> None:
    root = tmp_path / "root"
    agent = root / "usr/local/lib/banger/agent"
    agent.mkdir(parents=True)
    (agent / "core.py").write_text("OLD = 1\n")
    (agent / "mine.txt").write_text("left alone\n")
    (root / GUEST_STAMP.lstrip("/")).write_text("0123456789abcdef\n")
    root, out = install(tmp_path)
    assert f"installing banger's guest files {DIGEST}" in out
    assert (agent / "core.py").read_bytes() == b"NEW = 1\n"
    init = root / "usr/local/lib/banger/init"
    assert init.read_bytes() == b"#!/bin/sh\necho new\n" and init.stat().st_mode & 0o777 == 0o755
    assert (agent / "mine.txt").read_text() == "left alone\n"
    assert (root / GUEST_STAMP.lstrip("/")).read_text() == f"{DIGEST}\n"
    assert not list(root.rglob("*.banger-new"))


def test_matching_stamp_skips_the_install(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/local/lib/banger").mkdir(parents=True)
    (root / GUEST_STAMP.lstrip("/")).write_text(f"{DIGEST}\n")
    root, out = install(tmp_path)
    assert out == ""
    assert not (root / "usr/local/lib/banger/init").exists()


def test_failed_install_leaves_no_stamp(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/local/lib").mkdir(parents=True)
    (root / "usr/local/lib/banger").write_text("a file where a directory belongs")
    root, out = install(tmp_path)
    assert "could not install /usr/local/lib/banger/agent/core.py" in out
    assert (root / "usr/local/lib/banger").is_file()  # the next boot tries again


def test_initrd_is_base_plus_overlay_cached_and_pruned(tmp_path: Path) -> None:
    base = tmp_path / "initramfs.img"
    base.write_bytes(gzip.compress(b"base cpio"))
    cache = tmp_path / "cache"
    old = initrd_with_guest(base, "debian-6.1", "aaaa", cache)
    new = initrd_with_guest(base, "debian-6.1", "bbbb", cache)
    files, digest = current_files()
    assert new.read_bytes() == base.read_bytes() + overlay_bytes(files, digest)
    assert old.exists()  # a start may be about to launch with it: pruned at daemon start
    assert initrd_with_guest(base, "debian-6.1", "bbbb", cache) == new
    (cache / ".debian-6.1@cccc.img.1234").write_bytes(b"half")
    assert sorted(p.name for p in prune(cache, {new.name})) == [".debian-6.1@cccc.img.1234",
                                                                old.name]
    assert [p.name for p in cache.iterdir()] == [new.name]
