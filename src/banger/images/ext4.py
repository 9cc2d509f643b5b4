"""ext4 images from a directory tree (`mkfs.ext4 -d`) and batched `debugfs` edits."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from banger.errors import InvalidArgument, OperationFailed
from banger.runner import arun
from banger.userns import as_namespace_root

MIB = 1 << 20
GIB = 1 << 30
MIN_IMAGE = GIB
SLACK = 256 * MIB
GROWTH = 1.3
INODE_RATIO = 16384  # mke2fs's default bytes-per-inode for "default" filesystems
LABEL = "banger-root"


@dataclass(frozen=True)
class TreeUsage:
    bytes: int  # allocated bytes, hard links counted once
    inodes: int


@dataclass(frozen=True)
class Owner:
    """One ownership fix-up: `mode` is the full st_mode (type bits included) or None."""

    path: str
    uid: int
    gid: int
    mode: int | None = None


@dataclass(frozen=True)
class Device:
    """A device node or fifo to make in the image (`kind` c, b or p; `mode` the full st_mode)."""

    path: str
    kind: str
    major: int
    minor: int
    uid: int
    gid: int
    mode: int


def tree_usage(root: Path) -> TreeUsage:
    """What `du` would say, without following symlinks or double-counting hard links."""
    seen: set[tuple[int, int]] = set()
    total = inodes = 0
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                st = entry.stat(follow_symlinks=False)
                if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                    if (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                inodes += 1
                total += max(st.st_blocks * 512, 4096 if stat.S_ISDIR(st.st_mode) else 0)
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
    return TreeUsage(total, inodes)


def image_size(usage: TreeUsage) -> int:
    """Bytes for the image: content x 1.3 + slack, at least 1 GiB, whole MiB."""
    want = max(MIN_IMAGE, int(usage.bytes * GROWTH) + SLACK)
    return -(-want // MIB) * MIB


def inode_count(size: int, usage: TreeUsage) -> int:
    """mke2fs's default inode count, raised when the tree has many small files."""
    return max(size // INODE_RATIO, usage.inodes * 2)


async def make_ext4(src: Path, img: Path, size: int, *, inodes: int | None = None) -> None:
    """Build `img` (sparse, `size` bytes) holding the tree at `src`, owners preserved.

    Unprivileged, mkfs runs as root of a user namespace: this user's files become root's.
    """
    if size % 1024:
        raise InvalidArgument(f"image size {size} is not a multiple of 1 KiB")
    img.unlink(missing_ok=True)
    args: list[str | Path] = ["mkfs.ext4", "-q", "-F", "-d", src, "-L", LABEL]
    if inodes:
        args += ["-N", str(inodes)]
    # mke2fs writes "Inode size 256" notes etc. only without -q; -q keeps stderr for errors.
    await arun(as_namespace_root([*args, img, f"{size // 1024}k"]), what="mkfs.ext4")


def _quote(path: str) -> str:
    """A debugfs argument: double-quoted, which cannot carry quotes or newlines."""
    if any(c in path for c in '"\n\r\0') or not path.startswith("/"):
        raise InvalidArgument(f"path {path!r} cannot be expressed in a debugfs script")
    return f'"{path}"'


def owner_script(entries: Iterable[Owner]) -> str:
    lines: list[str] = []
    for e in entries:
        p = _quote(e.path)
        lines.append(f"set_inode_field {p} uid {e.uid}")
        lines.append(f"set_inode_field {p} gid {e.gid}")
        if e.mode is not None:
            lines.append(f"set_inode_field {p} mode 0{e.mode:o}")
    return "\n".join(lines) + "\n"


def device_script(devices: Iterable[Device]) -> str:
    """mknod each node (debugfs links it into the cwd under the name given), then its owner."""
    lines: list[str] = []
    for d in devices:
        parent, _, name = d.path.rpartition("/")
        if d.kind not in ("c", "b", "p") or not name:
            raise InvalidArgument(f"device {d.path!r} of kind {d.kind!r} cannot be made")
        numbers = "" if d.kind == "p" else f" {d.kind} {d.major} {d.minor}"
        _quote(d.path)  # refuses quotes and newlines, which the name cannot carry either
        lines += [f"cd {_quote(parent or '/')}", f'mknod "{name}"{numbers}']
        lines.append(owner_script([Owner(d.path, d.uid, d.gid, d.mode)]).rstrip("\n"))
    return "\n".join([*lines, "cd /"]) + "\n" if lines else ""


def _debugfs_errors(stderr: str) -> list[str]:
    # debugfs exits 0 even when commands fail; its only legitimate stderr line is the banner.
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("debugfs ")]


async def debugfs_batch(img: Path, script: str, *, write: bool = True) -> str:
    """Run one debugfs script against `img`; any reported error fails the whole batch."""
    args: list[str | Path] = ["debugfs", *(["-w"] if write else []), "-f", "-", img]
    res = await arun(args, input=script.encode(), what="debugfs")
    errors = _debugfs_errors(res.stderr)
    if errors:
        raise OperationFailed(f"debugfs on {img.name}: {errors[0]}" + (
            f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""))
    return res.stdout


async def set_owners(img: Path, entries: Iterable[Owner],
                     devices: Iterable[Device] = ()) -> None:
    """Make device nodes and fix uid/gid/mode of many paths in one debugfs pass."""
    script = device_script(devices) + owner_script(entries)
    if script.strip():
        await debugfs_batch(img, script)


async def _debugfs_read(img: Path, request: str, path: str) -> str:
    """One read-only debugfs request on a path; OperationFailed when debugfs reports an error."""
    res = await arun(["debugfs", "-R", f"{request} {_quote(path)}", img], what="debugfs")
    errors = _debugfs_errors(res.stderr)
    if errors:
        raise OperationFailed(f"{path} in {img.name}: {errors[0]}")
    return res.stdout


async def stat_path(img: Path, path: str) -> str:
    """`debugfs -R 'stat PATH'` output, or OperationFailed when the path is missing."""
    return await _debugfs_read(img, "stat", path)


async def read_text(img: Path, path: str) -> str:
    """The contents of a (text) file inside the image."""
    return await _debugfs_read(img, "cat", path)


__all__ = [
    "LABEL",
    "Device",
    "Owner",
    "TreeUsage",
    "debugfs_batch",
    "device_script",
    "image_size",
    "inode_count",
    "make_ext4",
    "owner_script",
    "read_text",
    "set_owners",
    "stat_path",
    "tree_usage",
]
