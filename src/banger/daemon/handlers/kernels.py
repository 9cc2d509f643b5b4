"""kernel.* methods."""

from __future__ import annotations

from banger.daemon.context import Context
from banger.daemon.registry import method
from banger.kernels import catalog
from banger.kernels.manifest import KernelManifest, delete_kernel, get_kernel, list_kernels
from banger.rpc.methods import CatalogRow, NameParams, NoParams
from banger.rpc.methods.kernel import (
    KERNEL_CATALOG,
    KERNEL_DELETE,
    KERNEL_LIST,
    KERNEL_PULL,
    KERNEL_SHOW,
    KernelPullParams,
)
from banger.vms.repo import VmRepo


@method(KERNEL_CATALOG)
async def kernel_catalog(ctx: Context, _: NoParams) -> list[CatalogRow]:
    cat = catalog.load_catalog()
    pulled = {k.name for k in list_kernels(ctx.daemon.paths)}
    return [CatalogRow(e.name, e.kind, e.description, "pulled" if e.name in pulled else "available",
                       e.name == cat.default) for e in cat.kernels]


@method(KERNEL_LIST)
async def kernel_list(ctx: Context, _: NoParams) -> list[KernelManifest]:
    return list_kernels(ctx.daemon.paths)


@method(KERNEL_SHOW)
async def kernel_show(ctx: Context, p: NameParams) -> KernelManifest:
    return get_kernel(ctx.daemon.paths, p.name)


@method(KERNEL_PULL)
async def kernel_pull(ctx: Context, p: KernelPullParams) -> KernelManifest:
    await ctx.daemon.artifacts.kernel(p.name, ctx.progress, force=p.force)
    return get_kernel(ctx.daemon.paths, p.name)


@method(KERNEL_DELETE)
async def kernel_delete(ctx: Context, p: NameParams) -> KernelManifest:
    VmRepo(ctx.daemon.store).refuse_if_used("kernel", p.name)
    return delete_kernel(ctx.daemon.paths, p.name)
