"""Removing a staging tree safely: a killed bootstrap may leave processes and mounts inside it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from pathlib import Path

from banger.paths import Paths
from banger.runner import run
from banger.userns import remove_tree_as_namespace_root, unprivileged

STAGING_PREFIXES = (".staging-", ".deleting-")


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


def cleanup_stale(paths: Paths) -> list[Path]:
    """Remove staging/deleting leftovers of crashed builds (call once at daemon start)."""
    removed: list[Path] = []
    if not paths.images_dir.is_dir():
        return removed
    for d in paths.images_dir.iterdir():
        if d.name.startswith(STAGING_PREFIXES) and d.is_dir():
            remove_tree(d)
            removed.append(d)
    return removed


__all__ = ["cleanup_stale", "kill_processes_in", "mounts_under", "remove_tree"]
