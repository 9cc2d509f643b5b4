"""`banger vm template list|build|prune`."""

from __future__ import annotations

from typing import Any

import click

from banger.cli import session
from banger.cli.output import print_json, print_table, say
from banger.cli.params import VCPU
from banger.rpc.methods import NoParams
from banger.rpc.methods import template as rpc


@click.group()
def template() -> None:
    """Saved VM shapes new VMs restore from instead of booting (fast start)."""


@template.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def template_list(as_json: bool) -> None:
    """Templates on disk."""
    rows: list[dict[str, Any]] = session.call(rpc.TEMPLATE_LIST, NoParams())
    if as_json:
        print_json(rows)
        return
    print_table(["ID", "IMAGE", "VCPU", "MEM", "ON DISK", "BUILT IN", "CREATED"],
                [[r["id"], r["key"]["image"], r["key"]["vcpu"], f"{r['key']['memory_mib']} MiB",
                  f"{r['disk_usage'] >> 20} MiB", f"{r['build_seconds']}s", r["created"]]
                 for r in rows],
                empty="no templates yet: the first `vm run` of a shape builds one")


@template.command("build")
@click.option("--image", help="Image name (default: config default_image).")
@click.option("--vcpu", type=VCPU, help="Virtual CPUs (default: config/host-aware).")
@click.option("--memory", metavar="SIZE", help="Memory (default: config/host-aware).")
def template_build(image: str | None, vcpu: int | None, memory: str | None) -> None:
    """Build the template a `vm create` with these options would use, ahead of time."""
    from banger.cli.vm_cmds import to_mib

    params = rpc.TemplateBuildParams(image, vcpu, to_mib(memory, "memory"))
    info = session.call_with_progress(rpc.TEMPLATE_BUILD, params)
    say(f"template {info['id']} ready ({info['key']['image']}, built in "
               f"{info['build_seconds']}s)")


@template.command("prune")
@click.option("--all", "prune_all", is_flag=True, help="Remove every template, not only stale ones.")
def template_prune(prune_all: bool) -> None:
    """Remove templates whose image or kernel changed (or all with --all)."""
    removed = session.call(rpc.TEMPLATE_PRUNE, rpc.TemplatePruneParams(prune_all))["removed"]
    say(f"removed {len(removed)} template(s)" + (f": {', '.join(removed)}" if removed else ""))
