"""`banger vm ...`."""

from __future__ import annotations

from typing import Any

import click

from banger.cli import session
from banger.cli.lazy import LazyGroup
from banger.cli.output import print_json, print_table


def _fmt_mib(mib: int) -> str:
    from banger.config.sizes import format_size_mib

    return format_size_mib(mib)


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("-a/-r", "--all/--running", "show_all", default=True, help="All VMs or running only.")
def vm_list(as_json: bool, show_all: bool) -> None:
    """List VMs."""
    vms: list[dict[str, Any]] = session.call("vm.list", {"all": show_all})
    if as_json:
        print_json(vms)
        return
    print_table(
        ["ID", "NAME", "STATE", "IMAGE", "IP", "VCPU", "MEM", "DISK", "CREATED"],
        [[v["id"][:8], v["name"], v["state"], v["image"], v.get("ip") or "-", v["vcpu"],
          f"{v['memory_mib']} MiB", _fmt_mib(v["disk_mib"]), v["created"]] for v in vms],
        empty="no VMs yet: `banger vm run` starts one",
    )


@click.group(cls=LazyGroup, lazy={})
def vm() -> None:
    """Create, run and manage VMs."""


vm.add_command(vm_list)
vm.add_command(vm_list, "ps")
