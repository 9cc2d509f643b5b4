"""banger's current guest files appended to a kernel's initramfs, installed into the root at boot.

Linux unpacks concatenated cpio archives in order, later entries replacing earlier ones, so
the overlay also brings the current /init (which does the install) and the applets it needs
to initramfs images built by an older banger. Images therefore never need a rebuild to get a
new agent: every cold boot brings banger's own, and a root that already has it (its stamp
matches) costs no more than one `read`.
"""

from __future__ import annotations

import functools
import gzip
import os
import secrets
import stat
from collections.abc import Sequence
from pathlib import Path

from banger.durable import fsync_path
from banger.guest import GuestFile, files_digest, guest_files
from banger.kernels.initramfs import CpioEntry, cpio_bytes, init_script

OVERLAY_DIR = "banger-guest"
# Applets the install step uses beyond those an older initramfs linked.
APPLETS = ("cp", "cmp", "chmod", "mv", "dirname")


@functools.cache
def current_files() -> tuple[tuple[GuestFile, ...], str]:
    """The packaged guest files and their digest, read once per process."""
    files = tuple(guest_files())
    return files, files_digest(files)


def overlay_entries(files: Sequence[GuestFile], digest: str) -> list[CpioEntry]:
    """The cpio entries: /init, applet links, the files under /banger-guest/root and their list."""
    entries = [CpioEntry("init", stat.S_IFREG | 0o755, init_script().encode())]
    entries += [CpioEntry(f"bin/{a}", stat.S_IFLNK | 0o777, b"busybox") for a in APPLETS]
    dirs: set[str] = set()
    for f in files:
        parts = f"{OVERLAY_DIR}/root{f.path}".split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    entries += [CpioEntry(d, stat.S_IFDIR | 0o755) for d in sorted(dirs)]
    entries += [CpioEntry(f"{OVERLAY_DIR}/root{f.path}", stat.S_IFREG | 0o644, f.data)
                for f in files]
    listing = "".join(f"{f.mode:o} {f.path}\n" for f in files)
    entries.append(CpioEntry(f"{OVERLAY_DIR}/files", stat.S_IFREG | 0o644, listing.encode()))
    entries.append(CpioEntry(f"{OVERLAY_DIR}/digest", stat.S_IFREG | 0o644, f"{digest}\n".encode()))
    return entries


def overlay_bytes(files: Sequence[GuestFile], digest: str) -> bytes:
    return gzip.compress(cpio_bytes(overlay_entries(files, digest)), compresslevel=6, mtime=0)


def initrd_with_guest(base: Path, kernel: str, kernel_digest: str, cache: Path) -> Path:
    """`base` followed by the guest overlay, cached per kernel name and digest (older ones
    are pruned at daemon start, when no start can be about to use them)."""
    files, digest = current_files()
    dest = cache / initrd_name(kernel, kernel_digest)
    if dest.is_file():
        return dest
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".{dest.name}.{secrets.token_hex(4)}"
    try:
        tmp.write_bytes(base.read_bytes() + overlay_bytes(files, digest))
        fsync_path(tmp)  # cached by name and never checked again: never a torn file
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def initrd_name(kernel: str, kernel_digest: str) -> str:
    return f"{kernel}@{kernel_digest}.img"  # kernel names cannot hold an @


def prune(cache: Path, keep: set[str]) -> list[Path]:
    """Remove cached initrds (and half-written ones) whose name is not in keep."""
    removed = []
    if cache.is_dir():
        for f in cache.iterdir():
            if f.name not in keep and f.is_file():
                f.unlink(missing_ok=True)
                removed.append(f)
    return removed


__all__ = ["OVERLAY_DIR", "current_files", "initrd_name", "initrd_with_guest", "overlay_bytes",
           "overlay_entries", "prune"]
