"""vm.cp: files and directory trees into a guest and out of it (logic in banger.transfer)."""

from __future__ import annotations

from banger.daemon.context import Context
from banger.daemon.registry import method
from banger.errors import InvalidArgument
from banger.rpc.methods.vm import VM_CP, CpParams, CpResult
from banger.transfer import copy


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


@method(VM_CP)
async def vm_cp(ctx: Context, p: CpParams) -> CpResult:
    for path in (p.src, p.dst):
        if not path.startswith("/") or "\0" in path:
            raise InvalidArgument("vm.cp paths must be absolute, without NUL")
    vm, agent = await ctx.daemon.vms.agent_for(p.vm)

    def progress(done: int, total: int | None) -> None:
        fraction = min(done / total, 0.99) if total else None
        ctx.progress("copy", fraction, f"{_mib(done)}/{_mib(total)}" if total else _mib(done))

    disk = ctx.daemon.vms.payload_file(vm)
    move = copy.push if p.to_guest else copy.pull
    sent = await move(agent, vm.name, p.src, p.dst, progress, disk)
    ctx.progress("copy", 1.0, _mib(sent))
    return CpResult(vm.name, p.src, p.dst, sent)
