"""vm.snapshot_* and vm.fork: checkpoints and live forks (logic in vms/snapshots.py, vms/fork.py)."""

from __future__ import annotations

from banger.daemon.context import Context
from banger.daemon.registry import method
from banger.rpc.methods import VmRef
from banger.rpc.methods.snapshot import (
    SNAPSHOT_CREATE,
    SNAPSHOT_DELETE,
    SNAPSHOT_LIST,
    SNAPSHOT_RESTORE,
    VM_FORK,
    ForkParams,
    SnapshotCreateParams,
    SnapshotInfo,
    SnapshotRef,
    SnapshotRestoreParams,
    SnapshotRestoreResult,
)
from banger.vms.fork import fork
from banger.vms.model import VmRecord
from banger.vms.snapshots import Snapshots


@method(SNAPSHOT_CREATE)
async def snapshot_create(ctx: Context, p: SnapshotCreateParams) -> SnapshotInfo:
    return await Snapshots(ctx.daemon.vms).create(p.vm, p.name, ctx.progress)


@method(SNAPSHOT_LIST)
async def snapshot_list(ctx: Context, p: VmRef) -> list[SnapshotInfo]:
    return Snapshots(ctx.daemon.vms).list(p.vm)


@method(SNAPSHOT_DELETE)
async def snapshot_delete(ctx: Context, p: SnapshotRef) -> SnapshotInfo:
    return await Snapshots(ctx.daemon.vms).delete(p.vm, p.name)


@method(SNAPSHOT_RESTORE)
async def snapshot_restore(ctx: Context, p: SnapshotRestoreParams) -> SnapshotRestoreResult:
    return await Snapshots(ctx.daemon.vms).restore(p.vm, p.name, discard=p.discard,
                                                   progress=ctx.progress)


@method(VM_FORK)
async def vm_fork(ctx: Context, p: ForkParams) -> list[VmRecord]:
    return await fork(ctx.daemon.vms, p.vm, p.name, p.count, ctx.progress)
