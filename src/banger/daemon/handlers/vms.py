"""VM methods. Only listing exists until the VM lifecycle lands."""

from __future__ import annotations

import msgspec

from banger.daemon.context import Context
from banger.daemon.registry import method


class VmListParams(msgspec.Struct, forbid_unknown_fields=True):
    all: bool = True


class VmSummary(msgspec.Struct):
    id: str
    name: str
    state: str
    image: str
    vcpu: int
    memory_mib: int
    disk_mib: int
    created: str
    ip: str | None = None
    last_error: str | None = None


@method("vm.list", VmListParams)
async def vm_list(ctx: Context, p: VmListParams) -> list[VmSummary]:
    rows = ctx.daemon.store.query("SELECT * FROM vms ORDER BY created_at, name")
    return [
        VmSummary(r["id"], r["name"], r["state"], r["image"], r["vcpu"], r["memory_mib"],
                  r["disk_mib"], r["created_at"], r["ip"], r["last_error"])
        for r in rows
        if p.all or r["state"] == "running"
    ]
