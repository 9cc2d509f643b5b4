"""Methods for tests and benchmarks, registered only when the daemon starts with
BANGER_TEST_METHODS=1 (banger.rpc.methods.testing)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from banger.daemon.context import Context
from banger.daemon.registry import method
from banger.errors import InvalidArgument
from banger.rpc.methods.testing import DEBUG_SLEEP, WORKSPACE_PUT_TAR, PutTarParams, SleepParams
from banger.workspace import guest


@method(DEBUG_SLEEP)
async def debug_sleep(ctx: Context, p: SleepParams) -> dict[str, float]:
    """A long operation with progress, used to test streaming and cancellation."""
    for i in range(p.steps):
        ctx.progress("sleeping", i / p.steps, f"step {i + 1}/{p.steps}")
        await asyncio.sleep(p.seconds / p.steps)
    ctx.progress("sleeping", 1.0, "done")
    return {"slept": p.seconds}


@method(WORKSPACE_PUT_TAR)
async def workspace_put_tar(ctx: Context, p: PutTarParams) -> dict[str, object]:
    """Extract a plain host tar file under a guest dir (the baseline bench/workspace.py uses)."""
    source = Path(p.tar)
    if not source.is_file():
        raise InvalidArgument(f"{p.tar} is not a file")
    _, agent = await ctx.daemon.vms.agent_for(p.vm)
    return await agent.put(p.dest, guest.file_chunks(source), timeout=600)
