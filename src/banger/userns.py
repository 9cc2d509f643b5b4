"""Root of a user namespace: how an unprivileged daemon makes and removes root-owned image files.

A normal user cannot create files owned by root or by Debian's system ids. Inside a user
namespace (`unshare --map-root-user`) the user's own files look root-owned, so `mkfs.ext4 -d`
and `chroot` see what a root build would; with `--map-auto` ids 1..65535 map to the user's
subordinate ids (/etc/subuid, /etc/subgid, through `newuidmap`), so files a rootless
`mmdebstrap` left behind can be removed. As root every helper here runs the command directly.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from banger.runner import Arg, run, which

SUBUID = Path("/etc/subuid")
SUBGID = Path("/etc/subgid")
# What an id range needs for rootless builds: Debian's system ids and nobody (65534).
NEEDED_IDS = 65536
FIRST_SUBID = 100000  # where useradd starts handing out subordinate ids


@dataclass(frozen=True)
class IdRange:
    start: int
    count: int


def unprivileged() -> bool:
    return os.geteuid() != 0


def as_namespace_root(argv: Sequence[Arg], *, subids: bool = False) -> list[Arg]:
    """`argv` run as root of a new user namespace (this user's files look root-owned to it).

    `subids` also maps ids 1..65535 to the user's subordinate ids. As root: `argv` unchanged.
    """
    if not unprivileged():
        return list(argv)
    return ["unshare", "--map-root-user", *(["--map-auto"] if subids else []), "--", *argv]


def remove_tree_as_namespace_root(path: Path) -> None:
    """Delete a tree holding files owned by subordinate ids (a killed rootless bootstrap's)."""
    run(as_namespace_root(["rm", "-rf", "--one-file-system", "--", path], subids=True),
        timeout=600, what="rm (in a user namespace)")


def current_user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def subordinate_ranges(table: Path, user: str, uid: int) -> list[IdRange]:
    """The ranges `table` (/etc/subuid or /etc/subgid) gives a user, by name or uid."""
    try:
        lines = table.read_text(errors="replace").splitlines()
    except OSError:
        return []
    found: list[IdRange] = []
    for line in lines:
        fields = line.strip().split(":")
        if len(fields) != 3 or fields[0] not in (user, str(uid)):
            continue
        if fields[1].isdigit() and fields[2].isdigit() and int(fields[2]) > 0:
            found.append(IdRange(int(fields[1]), int(fields[2])))
    return found


def free_subordinate_start(*tables: Path) -> int:
    """The first id past every range in `tables`: where a new user's range can go."""
    end = FIRST_SUBID
    for table in tables:
        try:
            lines = table.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            fields = line.split(":")
            if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
                end = max(end, int(fields[1]) + int(fields[2]))
    return end


def has_enough_ids(ranges: Sequence[IdRange]) -> bool:
    return any(r.count >= NEEDED_IDS - 1 for r in ranges)


def namespaces_work() -> tuple[bool, str]:
    """Can this user become root of a user namespace? (ok, stderr's last line)."""
    res = run(["unshare", "--map-root-user", "--", "true"], check=False, timeout=10)
    return res.ok, (res.stderr.strip().splitlines() or [f"exit {res.returncode}"])[-1]


def newuidmap_found() -> bool:
    return which("newuidmap") is not None and which("newgidmap") is not None


__all__ = [
    "NEEDED_IDS",
    "SUBGID",
    "SUBUID",
    "IdRange",
    "as_namespace_root",
    "current_user",
    "free_subordinate_start",
    "has_enough_ids",
    "namespaces_work",
    "newuidmap_found",
    "remove_tree_as_namespace_root",
    "subordinate_ranges",
    "unprivileged",
]
