"""Removing a staging tree safely: a killed bootstrap may leave processes and mounts inside it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

from banger.paths import Paths
from banger.runner import run
from banger.userns import remove_tree_as_namespace_root, unprivileged

STAGING_PREFIXES = (".staging-", ".deleting-")
WORKDIR_PREFIX = "banger-bootstrap-"


def _unescape(field: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as octal.
    for code, ch in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, ch)
    return field


def mounts_under(root: Path) -> list[Path]:
    """Mount points at or below `root`, deepest first (the order to unmount them)."""
    prefix = str(root.resolve())
    found: list[Path] = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            mnt = _unescape(line.split()[4])
            if mnt == prefix or mnt.startswith(prefix + "/"):
                found.append(Path(mnt))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _inside(link: Path, prefix: str) -> bool:
    try:
        target = os.readlink(link)
    except OSError:
        return False
    return target == prefix or target.startswith(prefix + "/")


def kill_processes_in(root: Path) -> int:
    """SIGKILL processes chrooted into (or working inside) `root`; returns how many."""
    prefix = str(root.resolve())
    killed = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        if _inside(proc / "root", prefix) or _inside(proc / "cwd", prefix):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(proc.name), signal.SIGKILL)
                killed += 1
    return killed


def remove_tree(root: Path) -> None:
    """Kill what runs inside, unmount what is mounted inside, then delete the tree.

    Files a rootless bootstrap left (owned by subordinate ids) go from inside a user namespace.
    """
    if not root.exists():
        return
    kill_processes_in(root)
    for mnt in mounts_under(root):
        run(["umount", "-l", mnt], check=False, what="umount")
    leftover = mounts_under(root)
    if leftover:
        # Deleting through a live bind mount could delete host files: leave it, loudly.
        raise OSError(f"cannot remove {root}: {leftover[0]} is still mounted")
    shutil.rmtree(root, ignore_errors=True)
    if root.exists() and unprivileged():
        remove_tree_as_namespace_root(root)


@contextlib.contextmanager
def bootstrap_workdir() -> Iterator[Path]:
    """A temp dir (named after this process) for mmdebstrap's work tree, removed afterwards.

    Not in the state dir, which is 0700: a rootless bootstrap's subordinate ids must reach their
    tree, so this dir is 0711 (others may pass through, not list it).
    """
    work = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-"))
    try:
        os.chmod(work, 0o711)
        yield work
    finally:
        remove_tree(work)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_workdirs(tmp: Path | None = None) -> list[Path]:
    """Bootstrap work dirs of this user whose process is gone (a crashed daemon's)."""
    found: list[Path] = []
    for d in Path(tmp or tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*-*"):
        pid = d.name[len(WORKDIR_PREFIX):].split("-", 1)[0]
        with contextlib.suppress(OSError):
            st = d.lstat()
            if (pid.isdigit() and st.st_uid == os.geteuid() and d.is_dir()
                    and not d.is_symlink() and not _pid_alive(int(pid))):
                found.append(d)
    return found


def cleanup_stale(paths: Paths) -> list[Path]:
    """Remove staging/deleting leftovers of crashed builds (call once at daemon start)."""
    removed = stale_workdirs()
    if paths.images_dir.is_dir():
        removed += [d for d in paths.images_dir.iterdir()
                    if d.name.startswith(STAGING_PREFIXES) and d.is_dir()]
    for d in removed:
        remove_tree(d)
    return removed


__all__ = ["bootstrap_workdir", "cleanup_stale", "kill_processes_in", "mounts_under",
           "remove_tree", "stale_workdirs"]
