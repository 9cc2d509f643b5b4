"""Support for tests that boot real VMs: cached kernel + slim image, an isolated BANGER_HOME.

The kernel and image are fetched and built by the real CLI into a cache home under
${BANGER_TEST_CACHE:-~/.cache/banger-test}/vm-home, keyed on the code that builds them, so only
the first run (or a change to that code) pays for the build. Each test session then gets a fresh
BANGER_HOME whose kernels/ and images/ dirs point at the cached ones.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import BIN, Banger

ROOT = Path(__file__).resolve().parents[1]
SLIM = "debian-bookworm-slim"
VM_LOCK = Path("/tmp/banger-vm-test.lock")
KEY_SOURCES = ["src/banger/images", "src/banger/kernels", "src/banger/guest",
               "src/banger/debian"]
KEY_IGNORED = ("src/banger/images/oci/",)  # OCI pulls don't build the cached images


def cache_dir() -> Path:
    return Path(os.environ.get("BANGER_TEST_CACHE") or Path.home() / ".cache" / "banger-test")


def artifacts_key() -> str:
    h = hashlib.sha256()
    for src in KEY_SOURCES:
        for f in sorted((ROOT / src).rglob("*")):
            rel = f.relative_to(ROOT).as_posix()
            if f.is_file() and "__pycache__" not in f.parts and not rel.startswith(KEY_IGNORED):
                h.update(rel.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


_lock_depth = 0


@contextmanager
def vm_lock() -> Iterator[None]:
    """Never two VM suites at once on this 2-core machine; re-entrant within one process."""
    global _lock_depth
    if _lock_depth:
        _lock_depth += 1
        try:
            yield
        finally:
            _lock_depth -= 1
        return
    with open(VM_LOCK, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        _lock_depth = 1
        try:
            yield
        finally:
            _lock_depth = 0


def _cli(home: Path, *args: str) -> None:
    env = {**os.environ, "BANGER_HOME": str(home)}
    subprocess.run([str(BIN / "banger"), *args], env=env, check=True, timeout=1800,
                   stdout=subprocess.DEVNULL)


def ensure_artifacts(*images: str) -> Path:
    """A cache home holding the default kernel and the given images, built by banger itself."""
    with vm_lock():  # another test process may be building or using the same cache home
        return _ensure_artifacts(images)


def _ensure_artifacts(images: tuple[str, ...]) -> Path:
    home = cache_dir() / "vm-home"
    key = artifacts_key()
    key_file = home / "key"
    if not key_file.exists() or key_file.read_text() != key:
        shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True, exist_ok=True)
    try:
        _cli(home, "kernel", "pull", "debian-bookworm-cloud")
        for image in images:
            if not (home / "state" / "images" / image / "manifest.json").exists():
                _cli(home, "image", "pull", image)
    finally:
        _cli(home, "daemon", "stop")
    key_file.write_text(key)
    return home


def make_home(cache: Path, prefix: str = "bv-") -> Path:
    """A fresh BANGER_HOME sharing the cache's kernels and images; small VMs by default."""
    home = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    (home / "state").mkdir()
    for sub in ("kernels", "images"):
        (home / "state" / sub).symlink_to(cache / "state" / sub)
    (home / "config").mkdir()
    (home / "config" / "config.toml").write_text(
        f'default_image = "{SLIM}"\n[vm_defaults]\nvcpu = 1\nmemory = "1G"\ndisk = "4G"\n')
    return home


@contextmanager
def vm_home(*images: str) -> Iterator[Banger]:
    home = make_home(ensure_artifacts(*images))
    b = Banger(home, {**os.environ, "BANGER_HOME": str(home), "BANGER_LOG_LEVEL": "debug"})
    try:
        yield b
    finally:
        subprocess.run([str(BIN / "banger"), "vm", "prune", "-f"], env=b.env, timeout=120,
                       capture_output=True)
        for vm in _running(b):
            subprocess.run([str(BIN / "banger"), "vm", "delete", "-f", vm], env=b.env,
                           timeout=60, capture_output=True)
        b.stop_daemon()
        subprocess.run(["pkill", "-9", "-f", f"{home}/state/vms/"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def _running(b: Banger) -> list[str]:
    import json

    res = b.run("vm", "list", "--json")
    return [v["name"] for v in json.loads(res.stdout or "[]")] if res.returncode == 0 else []
