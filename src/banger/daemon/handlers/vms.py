"""vm.* lifecycle methods: thin wrappers over the VmManager."""

from __future__ import annotations

import msgspec

from banger.daemon.context import Context
from banger.daemon.handlers.sessions import sessions_of
from banger.daemon.registry import method
from banger.errors import BangerError, Conflict, InvalidArgument
from banger.rpc.methods import VmRef
from banger.rpc.methods.vm import (
    VM_CREATE,
    VM_DELETE,
    VM_EGRESS,
    VM_KILL,
    VM_LIST,
    VM_LOGS,
    VM_PRUNE,
    VM_RESTART,
    VM_SET,
    VM_SHOW,
    VM_START,
    VM_STOP,
    CreateRequest,
    DeleteParams,
    EgressDenial,
    EgressReport,
    LogsResult,
    PruneParams,
    PruneResult,
    RestartParams,
    SetParams,
    StartParams,
    StopParams,
    VmListParams,
)
from banger.rpc.peer import peer_pid
from banger.vms import events
from banger.vms.model import VmRecord, VmState
from banger.vms.owner import Owner, identify
from banger.vms.restore import saved_state


@method(VM_LIST)
async def vm_list(ctx: Context, p: VmListParams) -> list[VmRecord]:
    return [vm for vm in ctx.daemon.vms.repo.all()
            if p.all or vm.state == VmState.RUNNING]


@method(VM_SHOW)
async def vm_show(ctx: Context, p: VmRef) -> dict[str, object]:
    vm = ctx.daemon.vms.repo.find(p.vm)
    vm_dir = ctx.daemon.paths.vm_dir(vm.id)
    backend = ctx.daemon.vms.backend
    sessions = await sessions_of(ctx.daemon, vm.name) if vm.state == VmState.RUNNING else []
    return {**msgspec.to_builtins(vm), "dir": str(vm_dir), "console_log": str(vm_dir / "console.log"),
            "backend": backend.name, "backend_reason": backend.reason,
            "saved_state": saved_state(vm_dir).exists(), "events": events.recent(vm_dir),
            "sessions": sessions}


def _caller(ctx: Context) -> Owner:
    """The process on the other end of this request's connection (SO_PEERCRED)."""
    try:
        owner = identify(peer_pid(ctx.writer.get_extra_info("socket")))
    except OSError:
        owner = None
    if owner is None:
        raise Conflict("the daemon cannot see this client's process (another pid namespace?), "
                       "so it cannot delete the VM when the client ends; run without --rm")
    return owner


@method(VM_CREATE)
async def vm_create(ctx: Context, p: CreateRequest) -> VmRecord:
    owner = _caller(ctx) if p.remove_with_client else None
    return await ctx.daemon.vms.create(p, ctx.progress, ctx.info, owner=owner)


@method(VM_START)
async def vm_start(ctx: Context, p: StartParams) -> VmRecord:
    return await ctx.daemon.vms.start(p.vm, ctx.progress, cold=p.cold)


@method(VM_STOP)
async def vm_stop(ctx: Context, p: StopParams) -> VmRecord:
    return await ctx.daemon.vms.stop(p.vm, ctx.progress, timeout=p.timeout, save=p.save)


@method(VM_RESTART)
async def vm_restart(ctx: Context, p: RestartParams) -> VmRecord:
    await ctx.daemon.vms.stop(p.vm, ctx.progress, timeout=p.timeout)
    return await ctx.daemon.vms.start(p.vm, ctx.progress)


@method(VM_KILL)
async def vm_kill(ctx: Context, p: VmRef) -> VmRecord:
    return await ctx.daemon.vms.kill(p.vm)


@method(VM_DELETE)
async def vm_delete(ctx: Context, p: DeleteParams) -> VmRecord:
    return await ctx.daemon.vms.delete(p.vm, force=p.force, progress=ctx.progress)


@method(VM_PRUNE)
async def vm_prune(ctx: Context, p: PruneParams) -> PruneResult:
    """Delete every VM that is not running (created, stopped, error)."""
    doomed = [vm for vm in ctx.daemon.vms.repo.all()
              if vm.state in (VmState.CREATED, VmState.STOPPED, VmState.ERROR)]
    deleted: list[str] = []
    failed: list[str] = []
    for vm in doomed:
        if p.dry_run:
            deleted.append(vm.name)
            continue
        try:
            await ctx.daemon.vms.delete(vm.id, force=False, progress=ctx.progress)
            deleted.append(vm.name)
        except BangerError as exc:
            failed.append(f"{vm.name}: {exc.message}")
    return PruneResult(deleted, failed)


@method(VM_SET)
async def vm_set(ctx: Context, p: SetParams) -> VmRecord:
    vms = ctx.daemon.vms
    if not (p.allow or p.deny):
        return await vms.set_shape(p.vm, vcpu=p.vcpu, memory_mib=p.memory_mib,
                                   disk_mib=p.disk_mib)
    if p.vcpu or p.memory_mib or p.disk_mib:  # each half can be refused: never half of both
        raise InvalidArgument("change the shape and the egress rules in two `vm set` calls")
    return await vms.set_egress(p.vm, allow=p.allow, deny=p.deny)


@method(VM_EGRESS)
async def vm_egress(ctx: Context, p: VmRef) -> EgressReport:
    vm = ctx.daemon.vms.repo.find(p.vm)
    denied = await ctx.daemon.vms.net.egress.denied(vm.id, ctx.daemon.paths.vm_dir(vm.id))
    return EgressReport(vm.name, vm.egress,
                        [EgressDenial(d.time, d.kind, d.target) for d in denied])


@method(VM_LOGS)
async def vm_logs(ctx: Context, p: VmRef) -> LogsResult:
    """Where the console log is; the CLI reads (and follows) the file itself."""
    vm = ctx.daemon.vms.repo.find(p.vm)
    return LogsResult(str(ctx.daemon.paths.vm_dir(vm.id) / "console.log"), vm.name)
