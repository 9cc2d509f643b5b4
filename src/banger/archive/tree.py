"""A destination directory worked on only through directory fds (openat-style, O_NOFOLLOW).

Parents are resolved component by component. By default a symlink on the way is refused:
the kernel never follows a link an archive made. OCI layers need lower layers' links to
work as in a container (`follow_in_root`): banger then reads the link and resolves its
target itself, inside the root, never above it; the kernel still follows nothing.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from banger.archive.limits import ArchiveError, refuse
from banger.archive.write import DIR_FLAGS

MAX_LINK_HOPS = 40
MAX_CACHED_FDS = 256
Real = tuple[str, ...]  # a symlink-free path from the root, as components


class Tree:
    """The root's fd, cached fds of resolved directories, and the operations on entries."""

    def __init__(self, root: Path, origin: str, *, follow_in_root: bool = False) -> None:
        self.root = root
        self.origin = origin
        self.follow_in_root = follow_in_root
        self.root_fd = os.open(root, DIR_FLAGS)
        self.member = ""  # the member being placed, for error messages
        self._resolved: dict[Real, Real] = {}
        self._fds: dict[Real, int] = {}
        self._retired: list[int] = []

    def close(self) -> None:
        self.forget()
        self.close_retired()
        os.close(self.root_fd)

    def refuse(self, why: str) -> ArchiveError:
        return refuse(self.origin, self.member, why)

    # ---- resolution -------------------------------------------------------------------

    def forget(self) -> None:
        """Drop cached resolutions (the structure changed); fds close before the next member."""
        self._retired += self._fds.values()
        self._fds.clear()
        self._resolved.clear()

    def close_retired(self) -> None:
        for fd in self._retired:
            os.close(fd)
        self._retired.clear()

    def lstat(self, real: Real | list[str]) -> os.stat_result | None:
        try:
            return os.lstat("/".join(real) or ".", dir_fd=self.root_fd)
        except FileNotFoundError:
            return None

    def resolve_dir(self, parts: list[str], create: bool) -> Real | None:
        """The real path of directory `parts` inside the root; None if missing and not create."""
        key = tuple(parts)
        if key in self._resolved:
            return self._resolved[key]
        real: list[str] = []
        todo = list(parts)
        hops = 0
        while todo:
            part = todo.pop(0)
            if part == "..":  # only from a symlink target (follow_in_root)
                if not real:
                    raise self.refuse("a symlink on its path leads outside the root")
                real.pop()
                continue
            st = self.lstat([*real, part])
            if st is None:
                if not create:
                    return None
                os.mkdir(part, 0o700, dir_fd=self.dir_fd(tuple(real)))
            elif stat.S_ISLNK(st.st_mode):
                hops += 1
                todo = self._through_link(real, part, hops) + todo
                continue
            elif not stat.S_ISDIR(st.st_mode):
                raise self.refuse(f"{'/'.join([*real, part])!r} is not a directory")
            real.append(part)
        result = tuple(real)
        self._resolved[key] = result
        return result

    def _through_link(self, real: list[str], part: str, hops: int) -> list[str]:
        """The components a symlink stands for (follow_in_root), resolved by banger."""
        if not self.follow_in_root:
            raise self.refuse(f"its path goes through the symlink {'/'.join([*real, part])!r}")
        if hops > MAX_LINK_HOPS:
            raise self.refuse("too many symlinks on its path")
        target = os.readlink("/".join([*real, part]), dir_fd=self.root_fd)
        if target.startswith("/"):
            real.clear()
        return [p for p in target.split("/") if p not in ("", ".")]

    def dir_fd(self, real: Real) -> int:
        """An fd for a resolved directory, opened component by component with O_NOFOLLOW."""
        if not real:
            return self.root_fd
        fd = self._fds.get(real)
        if fd is not None:
            return fd
        parent = self.dir_fd(real[:-1])
        fd = os.open(real[-1], DIR_FLAGS, dir_fd=parent)
        if len(self._fds) >= MAX_CACHED_FDS:
            self.forget()
        self._fds[real] = fd
        return fd

    def parent(self, parts: list[str], create: bool = True) -> tuple[Real, int] | None:
        """(real path, fd) of the directory that holds `parts[-1]`."""
        real = self.resolve_dir(parts[:-1], create)
        if real is None:
            return None
        return real, self.dir_fd(real)

    # ---- entries ----------------------------------------------------------------------

    def remove(self, fd: int, name: str) -> bool:
        """Remove one entry (a directory recursively) without following symlinks; True: a dir."""
        st = os.lstat(name, dir_fd=fd)
        if stat.S_ISDIR(st.st_mode):
            self.forget()
            shutil.rmtree(name, dir_fd=fd)
            return True
        if stat.S_ISLNK(st.st_mode):
            self.forget()
        os.unlink(name, dir_fd=fd)
        return False

    def symlink_target_ok(self, target: str, real: Real) -> None:
        """Refuse a target that is empty, holds NUL, or climbs above the root (outside OCI
        layers, which banger resolves itself, a target may not climb at all)."""
        if not target or "\0" in target:
            raise self.refuse("symlink with an empty or invalid target")
        if target.startswith("/"):
            if self.follow_in_root:
                return  # resolved inside the root, by banger, like a container runtime
            raise self.refuse(f"symlink to the absolute path {target[:120]!r}")
        if not self.follow_in_root and ".." in target.split("/"):
            # Lexical depth cannot see links made later (a/x -> b/../.., then a/b -> ..).
            raise self.refuse(f"symlink to {target[:120]!r} climbs with '..'")
        depth = len(real)
        for part in target.split("/"):
            depth += -1 if part == ".." else 0 if part in ("", ".") else 1
            if depth < 0:
                raise self.refuse(f"symlink to {target[:120]!r} escapes the root")


__all__ = ["Real", "Tree"]
