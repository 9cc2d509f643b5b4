"""Running banger as a normal user in tests: the user, a venv it can read, its homes.

CI runs as root, so the suite makes an unprivileged user (with subordinate ids) and runs the
real CLI as that user with `runuser`. The checkout may be unreadable to it (under /root): banger
is installed, by root, from this checkout and the configured pip registry into a world-readable
venv under /var/tmp, keyed on the sources and kept across runs. Run by a normal user, the
tests use that user and the current venv instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from banger.userns import (
    NEEDED_IDS,
    SUBGID,
    SUBUID,
    free_subordinate_start,
    has_enough_ids,
    subordinate_ranges,
)
from tests.conftest import BIN

ROOT = Path(__file__).resolve().parents[1]
USER = os.environ.get("BANGER_TEST_USER", "banger-test")
BASE = Path("/var/tmp/banger-unpriv")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def as_root() -> bool:
    return os.geteuid() == 0


def ensure_user() -> pwd.struct_passwd:
    """The test user: made with a home and subordinate ids if missing (root only)."""
    if not as_root():
        return pwd.getpwuid(os.getuid())
    try:
        entry = pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", USER], check=True)
        entry = pwd.getpwnam(USER)
    for table, flag in ((SUBUID, "--add-subuids"), (SUBGID, "--add-subgids")):
        if not has_enough_ids(subordinate_ranges(table, USER, entry.pw_uid)):
            start = free_subordinate_start(SUBUID, SUBGID)
            subprocess.run(["usermod", flag, f"{start}-{start + NEEDED_IDS - 1}", USER],
                           check=True)
    return entry


def source_key() -> str:
    h = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    for f in sorted((ROOT / "src").rglob("*")):
        if f.is_file() and "__pycache__" not in f.parts and f.name != "_buildinfo.json":
            h.update(f.relative_to(ROOT).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    BASE.mkdir(mode=0o755, exist_ok=True)
    with open(BASE / name, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _copy_sources(dest: Path) -> None:
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "src", dest / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))


def ensure_venv() -> Path:
    """bin/ of a venv the test user can run: root installs this checkout into it once per key."""
    if not as_root():
        return BIN
    key = source_key()
    venv = BASE / f"venv-{key}"
    stamp = venv / ".complete"  # the scripts' shebangs name the venv: it is built in place
    with _locked("venv.lock"):
        if stamp.exists():
            return venv / "bin"
        shutil.rmtree(venv, ignore_errors=True)
        src = Path(tempfile.mkdtemp(prefix="src-", dir=BASE))
        try:
            _copy_sources(src)  # pip builds in the source tree: never in the checkout
            subprocess.run(["/usr/bin/python3", "-m", "venv", venv], check=True)
            subprocess.run([venv / "bin/pip", "install", "-q", str(src)],
                           check=True, capture_output=True, timeout=900)
        except BaseException:
            shutil.rmtree(venv, ignore_errors=True)
            raise
        finally:
            shutil.rmtree(src, ignore_errors=True)
        os.chmod(venv, 0o755)
        stamp.touch()
        for old in BASE.glob("venv-*"):
            if old != venv:
                shutil.rmtree(old, ignore_errors=True)
    return venv / "bin"


def user_dir(prefix: str, parent: Path = Path("/tmp")) -> Path:
    """A fresh directory owned by the test user (short: sockets live under it)."""
    entry = ensure_user()
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def user_argv(argv: list[str]) -> list[str]:
    if not as_root():
        return argv
    return ["runuser", "-u", USER, "--", *argv]


@dataclass
class UserBanger:
    """The real CLI, run as the test user with its own BANGER_HOME."""

    home: Path
    bindir: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 120, input: str | None = None,
            check: bool = False) -> subprocess.CompletedProcess[str]:
        return self.run_argv([str(self.bindir / "banger"), *args], timeout=timeout,
                             input=input, check=check)

    def run_argv(self, argv: list[str], timeout: float = 120, input: str | None = None,
                 check: bool = False, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        env_argv = ["env", "-i", *(f"{k}={v}" for k, v in self.env.items())]
        proc = subprocess.run(user_argv([*env_argv, *argv]), capture_output=True, text=True,
                              timeout=timeout, input=input, cwd=cwd)
        if check and proc.returncode != 0:
            raise AssertionError(f"{argv} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc


def user_banger(home: Path) -> UserBanger:
    entry = ensure_user()
    env = {"HOME": entry.pw_dir, "USER": entry.pw_name, "PATH": PATH, "LANG": "C.UTF-8",
           "BANGER_HOME": str(home), "BANGER_LOG_LEVEL": "debug"}
    return UserBanger(home, ensure_venv(), env)


TUN = Path("/dev/net/tun")


@contextlib.contextmanager
def tun_open_to_users() -> Iterator[None]:
    """/dev/net/tun as Debian ships it (0666) while the test runs: some hosts tighten it, and
    slirp4netns and unprivileged taps need it."""
    mode = stat.S_IMODE(TUN.stat().st_mode)
    TUN.chmod(mode | 0o666)
    try:
        yield
    finally:
        TUN.chmod(mode)


__all__ = [
    "TUN",
    "USER",
    "UserBanger",
    "as_root",
    "ensure_user",
    "ensure_venv",
    "source_key",
    "tun_open_to_users",
    "user_argv",
    "user_banger",
    "user_dir",
]
