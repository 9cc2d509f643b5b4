"""What a VM's checkpoints are on disk, and which frozen disks they and VMs still layer on.

A checkpoint is `<vm_dir>/snapshots/<name>/`: `snapshot.json` (written last) and, when the VM
was running or saved, `memory.snap`. Its disk is a read-only copy of the VM's own disk layer in
`templates/.disks/` beside the templates' frozen disks, so the one collector (Templates.
collect_disks) keeps it while a checkpoint, a VM's disk or another frozen disk layers on it.
"""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

from banger.errors import InvalidArgument
from banger.vmm.base import Backend, Checkpointer, Snapshotter

SNAPSHOTS = "snapshots"
META = "snapshot.json"
MEMORY = "memory.snap"
MAX_CHAIN = 64  # a disk's layers; more is a loop or a hostile header
_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")


class SnapshotMeta(msgspec.Struct):
    name: str
    created: str
    disk: str  # file name in templates/.disks: the VM's disk at that instant, read-only
    memory: bool
    auto: bool
    vcpu: int
    memory_mib: int
    disk_mib: int
    size_bytes: int = 0
    workspace: dict[str, str] | None = None


def validate_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidArgument(f"invalid checkpoint name {name!r}: use 1-63 lowercase letters, "
                              "digits, dots, dashes and underscores, starting and ending with a "
                              "letter or digit")
    return name


def root(vm_dir: Path) -> Path:
    return vm_dir / SNAPSHOTS


def read(d: Path) -> SnapshotMeta | None:
    """A complete checkpoint's metadata, or None (half-made, or not one)."""
    try:
        meta = msgspec.json.decode((d / META).read_bytes(), type=SnapshotMeta)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None
    return meta if meta.name == d.name else None


def metas(vm_dir: Path) -> list[SnapshotMeta]:
    """A VM's complete checkpoints, oldest first."""
    d = root(vm_dir)
    if not d.is_dir():
        return []
    found = [read(sub) for sub in d.iterdir() if not sub.name.startswith(".")]
    return sorted((m for m in found if m is not None), key=lambda m: (m.created, m.name))


def chain(backend: Backend, disk: Path) -> list[Path]:
    """The disks below this one, nearest first."""
    if isinstance(backend, Checkpointer):
        below: list[Path] = []
        nxt = backend.backing_file(disk)
        while nxt is not None and len(below) < MAX_CHAIN and nxt not in below:
            below.append(nxt)
            nxt = backend.backing_file(nxt)
        return below
    if isinstance(backend, Snapshotter):
        base = backend.disk_base(disk.parent)
        return [base] if base is not None else []
    return []


def disks_in_use(vms_dir: Path, disks: Path, backend: Backend) -> set[Path]:
    """Frozen disks a VM's disk or a checkpoint layers on, at any depth: never deleted while so."""
    if not vms_dir.is_dir():
        return set()
    used: set[Path] = set()
    for vm_dir in (d for d in vms_dir.iterdir() if d.is_dir()):
        used.update(chain(backend, backend.disk_path(vm_dir)))
        for meta in metas(vm_dir):
            disk = disks / meta.disk
            used.add(disk)
            used.update(chain(backend, disk))
    return used
