"""kernel.* methods."""

from __future__ import annotations

import msgspec

from banger.daemon.context import Context
from banger.daemon.registry import NoParams, method
from banger.kernels import catalog
from banger.kernels.manifest import KernelManifest, delete_kernel, get_kernel, list_kernels
from banger.store.db import utcnow
from banger.vms.repo import VmRepo


class NameParams(msgspec.Struct, forbid_unknown_fields=True):
    name: str


class PullParams(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    force: bool = False


class CatalogRow(msgspec.Struct):
    name: str
    kind: str
    description: str
    state: str
    default: bool


def _register(ctx: Context, m: KernelManifest) -> None:
    with ctx.daemon.store.tx() as c:
        c.execute("INSERT OR REPLACE INTO kernels (name, version, path, manifest_json, created_at) "
                  "VALUES (?,?,?,?,?)", (m.name, m.kernel_version,
                                         str(ctx.daemon.paths.kernels_dir / m.name),
                                         msgspec.json.encode(m).decode(), utcnow()))


@method("kernel.catalog", NoParams)
async def kernel_catalog(ctx: Context, _: NoParams) -> list[CatalogRow]:
    cat = catalog.load_catalog()
    pulled = {k.name for k in list_kernels(ctx.daemon.paths)}
    return [CatalogRow(e.name, e.kind, e.description, "pulled" if e.name in pulled else "available",
                       e.name == cat.default) for e in cat.kernels]


@method("kernel.list", NoParams)
async def kernel_list(ctx: Context, _: NoParams) -> list[KernelManifest]:
    return list_kernels(ctx.daemon.paths)


@method("kernel.show", NameParams)
async def kernel_show(ctx: Context, p: NameParams) -> KernelManifest:
    return get_kernel(ctx.daemon.paths, p.name)


@method("kernel.pull", PullParams, long=True)
async def kernel_pull(ctx: Context, p: PullParams) -> KernelManifest:
    await ctx.daemon.artifacts.kernel(p.name, ctx.progress, force=p.force)
    manifest = get_kernel(ctx.daemon.paths, p.name)
    _register(ctx, manifest)
    return manifest


@method("kernel.delete", NameParams)
async def kernel_delete(ctx: Context, p: NameParams) -> KernelManifest:
    VmRepo(ctx.daemon.store).refuse_if_used("kernel", p.name)
    manifest = delete_kernel(ctx.daemon.paths, p.name)
    with ctx.daemon.store.tx() as c:
        c.execute("DELETE FROM kernels WHERE name=?", (p.name,))
    return manifest
