"""workspace.*: ship a payload the CLI built into a guest repo, export the guest's work back.

The CLI and the daemon share a host and a user, so payloads and exports pass as file paths.
"""

from __future__ import annotations

from pathlib import Path

from banger.daemon.context import Context
from banger.daemon.registry import method
from banger.errors import InvalidArgument, NotFound
from banger.rpc.methods.workspace import (
    WORKSPACE_EXPORT,
    WORKSPACE_PREPARE,
    PrepareParams,
    PrepareResult,
    WorkspaceExportParams,
    WorkspaceExportResult,
)
from banger.workspace import guest, guest_cwd
from banger.workspace.payload import Plan


def workspace_record(plan: Plan) -> dict[str, str]:
    return {"host_repo": plan.host_repo, "host_head": plan.host_head, "base": plan.base,
            "shipped_tree": plan.shipped_tree, "guest_path": plan.guest_path,
            "branch": plan.guest_branch, "subdir": plan.subdir,
            "include_untracked": str(plan.include_untracked).lower(),
            "full_history": str(not plan.shallow).lower()}


@method(WORKSPACE_PREPARE)
async def workspace_prepare(ctx: Context, p: PrepareParams) -> PrepareResult:
    payload = Path(p.payload)
    if not payload.is_file():
        raise InvalidArgument(f"workspace payload {payload} is missing")
    vm, agent = await ctx.daemon.vms.agent_for(p.vm)
    async with ctx.daemon.vms.lock(vm.id):
        await guest.install(agent, p.plan, payload, force=p.force,
                            step=lambda message: ctx.progress("workspace", None, message),
                            disk=ctx.daemon.vms.payload_file(vm))
        ctx.daemon.vms.repo.update(vm.id, workspace=workspace_record(p.plan))
    tooling = None
    if p.plan.bootstrap:
        ctx.progress("tooling", None, "checking for pinned tools")
        tooling = await guest.bootstrap(agent, p.plan)
    cwd = guest_cwd(p.plan.guest_path, p.plan.subdir)
    return PrepareResult(vm.name, p.plan.base, p.plan.guest_path, cwd, tooling)


@method(WORKSPACE_EXPORT)
async def workspace_export(ctx: Context, p: WorkspaceExportParams) -> WorkspaceExportResult:
    output = Path(p.output)
    if not output.is_absolute() or not output.parent.is_dir():
        raise InvalidArgument(f"cannot write the export to {p.output}: no such directory")
    vm, agent = await ctx.daemon.vms.agent_for(p.vm)
    if vm.workspace is None and p.base is None:
        raise NotFound(f"VM {vm.name} has no workspace; ship one with "
                       f"`banger vm workspace prepare {vm.name} PATH`")
    guest_path = (vm.workspace or {}).get("guest_path", "/root/repo")
    ctx.progress("export", None, f"collecting work in {guest_path}")
    async with ctx.daemon.vms.lock(vm.id):
        commits, files = await guest.export(agent, guest_path, p.base, output,
                                            record=vm.workspace,
                                            origin=f"the workspace export from VM {vm.name}")
    return WorkspaceExportResult(vm.name, str(output), commits, files, vm.workspace)
