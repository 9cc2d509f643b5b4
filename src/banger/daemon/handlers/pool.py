"""pool.*: the warm pool of paused template clones."""

from __future__ import annotations

from banger.daemon.context import Context
from banger.daemon.registry import method
from banger.rpc.methods import NoParams
from banger.rpc.methods.pool import POOL_LIST, POOL_SET, PoolSetParams, PoolShapeInfo


@method(POOL_SET)
async def pool_set(ctx: Context, p: PoolSetParams) -> PoolShapeInfo:
    pool = ctx.daemon.vms.pool
    return await pool.set(pool.shape_for(p.image, p.vcpu, p.memory_mib), p.size)


@method(POOL_LIST)
async def pool_list(ctx: Context, _: NoParams) -> list[PoolShapeInfo]:
    return ctx.daemon.vms.pool.shapes()
