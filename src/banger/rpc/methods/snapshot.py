"""vm.snapshot_* and vm.fork: checkpoints of a VM (memory and disk) and live forks of it."""

from __future__ import annotations

import msgspec

from banger.rpc.methods import Method, VmRef


class SnapshotCreateParams(msgspec.Struct, forbid_unknown_fields=True):
    vm: str
    name: str | None = None  # None: a name from the time, `snap-YYYYmmdd-HHMMSS`


class SnapshotRef(msgspec.Struct, forbid_unknown_fields=True):
    vm: str
    name: str


class SnapshotRestoreParams(msgspec.Struct, forbid_unknown_fields=True):
    vm: str
    name: str
    discard: bool = False  # True: no automatic checkpoint of the current state first


class SnapshotInfo(msgspec.Struct):
    """One checkpoint of a VM."""

    name: str
    created: str
    size_bytes: int  # what it holds on disk of its own: saved memory and its disk layer
    memory: bool  # False: disk only (taken while the VM was stopped); restoring it boots cold
    auto: bool = False  # taken by a restore, so the state it replaced is not lost


class SnapshotRestoreResult(msgspec.Struct):
    restored: str
    auto: str | None  # the automatic checkpoint of the state before; None with discard
    state: str  # the VM's state afterwards


class ForkParams(msgspec.Struct, forbid_unknown_fields=True):
    vm: str
    # count 1: the fork's name; more: the prefix (NAME-1, ...); None: VM-fork-N, first free N
    name: str | None = None
    count: int = 1


SNAPSHOT_CREATE = Method("vm.snapshot_create", SnapshotCreateParams, "SnapshotInfo",
                         "Checkpoint a VM: its memory (when running) and a disk layer; it keeps "
                         "running.", long=True)
SNAPSHOT_LIST = Method("vm.snapshot_list", VmRef, "list[SnapshotInfo]",
                       "A VM's checkpoints, oldest first.")
SNAPSHOT_DELETE = Method("vm.snapshot_delete", SnapshotRef, "SnapshotInfo",
                         "Delete one checkpoint of a VM.")
SNAPSHOT_RESTORE = Method("vm.snapshot_restore", SnapshotRestoreParams, "SnapshotRestoreResult",
                          "Put a VM back to a checkpoint, first checkpointing the current state "
                          "unless discard.", long=True)
VM_FORK = Method("vm.fork", ForkParams, "list[VmRecord]",
                 "Make count new running VMs from a running VM's memory and disk, each with its "
                 "own identity.", long=True)
