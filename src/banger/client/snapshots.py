"""Checkpoints of a VM and live forks of it (the vm.snapshot_* and vm.fork methods)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from banger.client.base import BaseClient, ProgressFn

if TYPE_CHECKING:
    from banger.rpc.methods.snapshot import SnapshotInfo, SnapshotRestoreResult
    from banger.vms.model import VmRecord


class SnapshotApi(BaseClient):
    def vm_fork(self, vm: str, *, name: str | None = None, count: int = 1,
                on_progress: ProgressFn | None = None) -> list[VmRecord]:
        """`count` new running VMs from a running VM's memory and disk (name: the fork's name,
        or with count > 1 the prefix of NAME-1, NAME-2, ...)."""
        from banger.rpc.methods.snapshot import VM_FORK, ForkParams
        from banger.vms.model import VmRecord

        return self.call_as(VM_FORK, ForkParams(vm, name, count), list[VmRecord],
                            on_progress=on_progress)

    def snapshot_create(self, vm: str, name: str | None = None, *,
                        on_progress: ProgressFn | None = None) -> SnapshotInfo:
        from banger.rpc.methods.snapshot import SNAPSHOT_CREATE, SnapshotCreateParams, SnapshotInfo

        return self.call_as(SNAPSHOT_CREATE, SnapshotCreateParams(vm, name), SnapshotInfo,
                            on_progress=on_progress)

    def snapshot_list(self, vm: str) -> list[SnapshotInfo]:
        from banger.rpc.methods import VmRef
        from banger.rpc.methods.snapshot import SNAPSHOT_LIST, SnapshotInfo

        return self.call_as(SNAPSHOT_LIST, VmRef(vm), list[SnapshotInfo])

    def snapshot_delete(self, vm: str, name: str) -> SnapshotInfo:
        from banger.rpc.methods.snapshot import SNAPSHOT_DELETE, SnapshotInfo, SnapshotRef

        return self.call_as(SNAPSHOT_DELETE, SnapshotRef(vm, name), SnapshotInfo)

    def snapshot_restore(self, vm: str, name: str, *, discard: bool = False,
                         on_progress: ProgressFn | None = None) -> SnapshotRestoreResult:
        """Put the VM back to a checkpoint; the current state is checkpointed first unless
        discard=True."""
        from banger.rpc.methods.snapshot import (
            SNAPSHOT_RESTORE,
            SnapshotRestoreParams,
            SnapshotRestoreResult,
        )

        return self.call_as(SNAPSHOT_RESTORE, SnapshotRestoreParams(vm, name, discard),
                            SnapshotRestoreResult, on_progress=on_progress)
