"""vm.template.*: list, build ahead, prune."""

from __future__ import annotations

import msgspec

from banger.daemon.context import Context
from banger.daemon.registry import NoParams, method
from banger.vms.launch import template_key
from banger.vms.manager import CreateRequest
from banger.vms.templates import TemplateInfo


class BuildParams(msgspec.Struct, forbid_unknown_fields=True):
    image: str | None = None
    vcpu: int | None = None
    memory_mib: int | None = None


class PruneParams(msgspec.Struct, forbid_unknown_fields=True):
    all: bool = False


@method("template.list", NoParams)
async def template_list(ctx: Context, _: NoParams) -> list[TemplateInfo]:
    return ctx.daemon.vms.templates.list()


@method("template.build", BuildParams, long=True)
async def template_build(ctx: Context, p: BuildParams) -> TemplateInfo:
    """Build the template `vm create` with these options would use, ahead of time."""
    mgr = ctx.daemon.vms
    req = CreateRequest(None, p.image, None, p.vcpu, p.memory_mib, None, start=False)
    vm = mgr.new_record(req)
    image = await mgr.artifacts.image(vm.image, ctx.progress)
    vm = msgspec.structs.replace(vm, kernel=image.manifest.kernel or mgr.config.default_kernel)
    spec, image, kernel = await mgr.boot_inputs(vm, ctx.progress)
    key = template_key(spec, image, kernel, mgr.backend)
    return await mgr.templates.ensure(key, spec, ctx.progress)


@method("template.prune", PruneParams)
async def template_prune(ctx: Context, p: PruneParams) -> dict[str, list[str]]:
    """Remove templates no VM shape can use any more (image or kernel changed), or all."""
    mgr = ctx.daemon.vms
    removed: list[str] = []
    for info in mgr.templates.list():
        if p.all or not mgr.template_current(info):
            mgr.templates.remove(info.id)
            removed.append(info.id)
    return {"removed": removed}
