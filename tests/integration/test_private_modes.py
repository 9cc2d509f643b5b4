"""Item 12 of the hostile-guest issue: banger's state is private to its user (dirs 0700, files 0600)."""

from __future__ import annotations

import stat
import tempfile
from pathlib import Path

from tests.conftest import Banger


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_a_new_install_is_private(banger: Banger) -> None:
    banger.run("daemon", "start", check=True)
    state, cache = banger.home / "state", banger.home / "cache"
    for d in (state, cache, banger.home / "run", state / "vms", state / "images", state / "kernels"):
        assert mode(d) == 0o700, d
    for f in (state / "banger.db", state / "bangerd.log", banger.socket):
        assert mode(f) == 0o600, f


def test_an_existing_install_is_made_private_without_following_symlinks(banger: Banger) -> None:
    state, cache = banger.home / "state", banger.home / "cache"
    (state / "ssh").mkdir(parents=True, mode=0o755)
    key = state / "ssh" / "id_ed25519"
    key.write_text("private key")
    (cache / "debian" / "debs").mkdir(parents=True)
    deb = cache / "debian" / "debs" / "x.deb"
    deb.write_bytes(b"deb")
    shared = Path(tempfile.mkdtemp(dir="/tmp"))  # e.g. images shared with another home
    try:
        shared.chmod(0o755)
        (shared / "rootfs.ext4").write_bytes(b"ext4")
        (shared / "rootfs.ext4").chmod(0o644)
        (state / "images").symlink_to(shared)
        for path, old in ((state, 0o755), (state / "ssh", 0o755), (key, 0o644), (cache, 0o755),
                          (deb, 0o644)):
            path.chmod(old)
        banger.run("daemon", "start", check=True)
        assert [mode(p) for p in (state, state / "ssh", key, cache, deb)] == [0o700, 0o700, 0o600,
                                                                              0o700, 0o600]
        assert mode(shared) == 0o755 and mode(shared / "rootfs.ext4") == 0o644
    finally:
        (shared / "rootfs.ext4").unlink()
        shared.rmdir()
