"""`banger vm pool set|list`: the warm pool of paused clones."""

from __future__ import annotations

from typing import Any

import click

from banger.cli import session
from banger.cli.output import print_json, print_table, say
from banger.cli.params import VCPU
from banger.rpc.methods import NoParams
from banger.rpc.methods import pool as rpc


@click.group()
def pool() -> None:
    """Paused, restored clones kept ready so a matching `vm run`/`vm create` starts at once."""


@pool.command("set")
@click.option("--image", help="Image name (default: config default_image).")
@click.option("--vcpu", type=VCPU, help="Virtual CPUs (default: config/host-aware).")
@click.option("--memory", metavar="SIZE", help="Memory (default: config/host-aware).")
@click.option("--size", type=click.IntRange(0, 8), required=True,
              help="Clones to keep ready for this shape (0: stop and drain).")
def pool_set(image: str | None, vcpu: int | None, memory: str | None, size: int) -> None:
    """Keep SIZE paused clones of the shape `vm create` with these options would make."""
    from banger.cli.vm_cmds import to_mib

    info = session.call(rpc.POOL_SET, rpc.PoolSetParams(size, image, vcpu,
                                                        to_mib(memory, "memory")))
    shape = f"{info['image']} ({info['vcpu']} vcpu, {info['memory_mib']} MiB)"
    say(f"pool for {shape}: {size} clone(s)" if size else f"pool for {shape}: stopped")


@pool.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def pool_list(as_json: bool) -> None:
    """Pooled shapes: wanted and ready clones, and what the ready ones cost in host memory."""
    rows: list[dict[str, Any]] = session.call(rpc.POOL_LIST, NoParams())
    if as_json:
        print_json(rows)
        return
    print_table(["IMAGE", "VCPU", "MEM", "NET", "SIZE", "READY", "PSS", "STATUS"],
                [[r["image"], r["vcpu"], f"{r['memory_mib']} MiB", r["net_mode"], r["size"],
                  r["ready"], f"{r['pss_mib']:.0f} MiB",
                  "filling" if r["filling"] else (r["error"] or "-")] for r in rows],
                empty="no pool: `banger vm pool set --size N` keeps clones ready")
