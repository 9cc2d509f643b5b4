"""vm.* lifecycle methods: thin wrappers over the VmManager."""

from __future__ import annotations

import msgspec

from banger.daemon.context import Context
from banger.daemon.registry import method
from banger.errors import BangerError
from banger.vms import events
from banger.vms.fastboot import saved_state
from banger.vms.manager import CreateRequest
from banger.vms.model import VmRecord, VmState


class VmListParams(msgspec.Struct, forbid_unknown_fields=True):
    all: bool = True


class VmRef(msgspec.Struct, forbid_unknown_fields=True):
    vm: str


class CreateParams(msgspec.Struct, forbid_unknown_fields=True):
    name: str | None = None
    image: str | None = None
    kernel: str | None = None
    vcpu: int | None = None
    memory_mib: int | None = None
    disk_mib: int | None = None
    start: bool = True
    cold: bool = False
    net: str | None = None
    nat: bool = False
    publish: list[str] = []


class StopParams(msgspec.Struct, forbid_unknown_fields=True):
    vm: str
    timeout: float = 20.0
    save: bool = False


class StartParams(msgspec.Struct, forbid_unknown_fields=True):
    vm: str
    cold: bool = False


class DeleteParams(msgspec.Struct, forbid_unknown_fields=True):
    vm: str
    force: bool = False


class PruneParams(msgspec.Struct, forbid_unknown_fields=True):
    dry_run: bool = False


class SetParams(msgspec.Struct, forbid_unknown_fields=True):
    vm: str
    vcpu: int | None = None
    memory_mib: int | None = None
    disk_mib: int | None = None


@method("vm.list", VmListParams)
async def vm_list(ctx: Context, p: VmListParams) -> list[VmRecord]:
    return [vm for vm in ctx.daemon.vms.repo.all()
            if p.all or vm.state == VmState.RUNNING]


@method("vm.show", VmRef)
async def vm_show(ctx: Context, p: VmRef) -> dict[str, object]:
    vm = ctx.daemon.vms.repo.find(p.vm)
    vm_dir = ctx.daemon.paths.vm_dir(vm.id)
    backend = ctx.daemon.vms.backend
    return {**msgspec.to_builtins(vm), "dir": str(vm_dir), "console_log": str(vm_dir / "console.log"),
            "backend": backend.name, "backend_reason": backend.reason,
            "saved_state": saved_state(vm_dir).exists(), "events": events.recent(vm_dir)}


@method("vm.create", CreateParams, long=True)
async def vm_create(ctx: Context, p: CreateParams) -> VmRecord:
    req = CreateRequest(p.name, p.image, p.kernel, p.vcpu, p.memory_mib, p.disk_mib, p.start,
                        p.cold, net=p.net, nat=p.nat, publish=tuple(p.publish))
    vm = await ctx.daemon.vms.create(req, ctx.progress, ctx.info)
    return vm


@method("vm.start", StartParams, long=True)
async def vm_start(ctx: Context, p: StartParams) -> VmRecord:
    return await ctx.daemon.vms.start(p.vm, ctx.progress, cold=p.cold)


@method("vm.stop", StopParams, long=True)
async def vm_stop(ctx: Context, p: StopParams) -> VmRecord:
    return await ctx.daemon.vms.stop(p.vm, ctx.progress, timeout=p.timeout, save=p.save)


@method("vm.restart", StopParams, long=True)
async def vm_restart(ctx: Context, p: StopParams) -> VmRecord:
    await ctx.daemon.vms.stop(p.vm, ctx.progress, timeout=p.timeout)
    return await ctx.daemon.vms.start(p.vm, ctx.progress)


@method("vm.kill", VmRef)
async def vm_kill(ctx: Context, p: VmRef) -> VmRecord:
    return await ctx.daemon.vms.kill(p.vm)


@method("vm.delete", DeleteParams, long=True)
async def vm_delete(ctx: Context, p: DeleteParams) -> VmRecord:
    return await ctx.daemon.vms.delete(p.vm, force=p.force, progress=ctx.progress)


@method("vm.prune", PruneParams, long=True)
async def vm_prune(ctx: Context, p: PruneParams) -> dict[str, list[str]]:
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
    return {"deleted": deleted, "failed": failed}


@method("vm.set", SetParams)
async def vm_set(ctx: Context, p: SetParams) -> VmRecord:
    return await ctx.daemon.vms.set_shape(p.vm, vcpu=p.vcpu, memory_mib=p.memory_mib,
                                          disk_mib=p.disk_mib)


@method("vm.logs", VmRef)
async def vm_logs(ctx: Context, p: VmRef) -> dict[str, str]:
    """Where the console log is; the CLI reads (and follows) the file itself."""
    vm = ctx.daemon.vms.repo.find(p.vm)
    return {"path": str(ctx.daemon.paths.vm_dir(vm.id) / "console.log"), "name": vm.name}
