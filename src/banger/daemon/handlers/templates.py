"""vm.template.*: list, build ahead, prune."""

from __future__ import annotations

import msgspec

from banger.daemon.context import Context
from banger.daemon.registry import method
from banger.rpc.methods import NoParams
from banger.rpc.methods.template import (
    TEMPLATE_BUILD,
    TEMPLATE_LIST,
    TEMPLATE_PRUNE,
    TemplateBuildParams,
    TemplatePruneParams,
    TemplatePruneResult,
)
from banger.rpc.methods.vm import CreateRequest
from banger.vms.start import template_key
from banger.vms.templates import TemplateInfo


@method(TEMPLATE_LIST)
async def template_list(ctx: Context, _: NoParams) -> list[TemplateInfo]:
    return ctx.daemon.vms.templates.list()


@method(TEMPLATE_BUILD)
async def template_build(ctx: Context, p: TemplateBuildParams) -> TemplateInfo:
    """Build the template `vm create` with these options would use, ahead of time."""
    mgr = ctx.daemon.vms
    req = CreateRequest(image=p.image, vcpu=p.vcpu, memory_mib=p.memory_mib, start=False)
    vm = mgr.new_record(req)
    image = await mgr.artifacts.image(vm.image, ctx.progress)
    vm = msgspec.structs.replace(vm, kernel=image.manifest.kernel or mgr.config.default_kernel)
    spec, image, kernel = await mgr.boot_inputs(vm, ctx.progress)
    key = template_key(spec, image, kernel, mgr.backend)
    return await mgr.templates.ensure(key, spec, ctx.progress)


@method(TEMPLATE_PRUNE)
async def template_prune(ctx: Context, p: TemplatePruneParams) -> TemplatePruneResult:
    """Remove templates no VM shape can use any more (image or kernel changed), or all."""
    mgr = ctx.daemon.vms
    removed: list[str] = []
    for info in mgr.templates.list():
        if p.all or not mgr.template_current(info):
            mgr.templates.remove(info.id)
            removed.append(info.id)
    return TemplatePruneResult(removed)
