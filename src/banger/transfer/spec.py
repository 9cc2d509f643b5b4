"""`vm cp` arguments: `VM:/path` on exactly one side, a host path on the other."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from banger.errors import InvalidArgument

# A VM name or id before the colon; anything else with a colon is a host path (./a:b).
_VM_PREFIX = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]{0,63}):(.*)$", re.S)


@dataclass(frozen=True)
class CopyPlan:
    vm: str
    src: str  # absolute: a guest path when to_guest is False, else a host path
    dst: str
    to_guest: bool


def split(arg: str) -> tuple[str | None, str]:
    """(VM, path) for `VM:path`, (None, arg) for a host path."""
    match = _VM_PREFIX.match(arg)
    if match is None or "/" in match[1]:
        return None, arg
    return match[1], match[2]


def _guest_path(vm: str, path: str) -> str:
    if not path.startswith("/"):
        raise InvalidArgument(f"guest path {path!r} must be absolute: {vm}:/path")
    if "\0" in path or len(path) > 4096:
        raise InvalidArgument("guest path must be at most 4096 bytes, without NUL")
    normal = os.path.normpath(path)
    return "/" + normal.lstrip("/")


def _host_path(path: str) -> str:
    if not path or "\0" in path:
        raise InvalidArgument("host path must not be empty or hold NUL")
    return os.path.abspath(path)


def plan(src: str, dst: str) -> CopyPlan:
    """Which way, which VM; InvalidArgument unless exactly one side names a VM."""
    (src_vm, src_path), (dst_vm, dst_path) = split(src), split(dst)
    if (src_vm is None) == (dst_vm is None):
        raise InvalidArgument("name a VM on exactly one side: `vm cp SRC VM:/DST` or "
                              "`vm cp VM:/SRC DST` (a host path with a colon: ./a:b)")
    if src_vm is not None:
        guest = _guest_path(src_vm, src_path)
        if guest == "/":
            raise InvalidArgument("copy a path below / (the whole root file system is refused)")
        return CopyPlan(src_vm, guest, _host_path(dst_path), to_guest=False)
    assert dst_vm is not None
    return CopyPlan(dst_vm, _host_path(src_path), _guest_path(dst_vm, dst_path), to_guest=True)
