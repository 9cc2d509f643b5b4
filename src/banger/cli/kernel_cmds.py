"""`banger kernel catalog|list|show|pull|delete`."""

from __future__ import annotations

from typing import Any

import click

from banger.cli import session
from banger.cli.output import print_catalog, print_json, print_table, say
from banger.rpc.methods import NameParams, NoParams
from banger.rpc.methods import kernel as rpc


@click.group()
def kernel() -> None:
    """Guest kernels: Debian's cloud kernel with a generated initramfs, or bundles."""


@kernel.command("catalog")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def kernel_catalog(as_json: bool) -> None:
    """Kernels banger knows how to fetch."""
    print_catalog(session.call(rpc.KERNEL_CATALOG, NoParams()), as_json)


@kernel.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def kernel_list(as_json: bool) -> None:
    """Pulled kernels."""
    rows: list[dict[str, Any]] = session.call(rpc.KERNEL_LIST, NoParams())
    if as_json:
        print_json(rows)
        return
    print_table(["NAME", "VERSION", "PACKAGE", "PULLED"],
                [[r["name"], r["kernel_version"], r["package_version"], r["pulled_at"]] for r in rows],
                empty="no kernels pulled yet: `banger kernel pull NAME` (or just run a VM)")


@kernel.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the only view today).")
def kernel_show(name: str, as_json: bool) -> None:
    """Show a pulled kernel's manifest (JSON)."""
    print_json(session.call(rpc.KERNEL_SHOW, NameParams(name)))


@kernel.command("pull")
@click.argument("name")
@click.option("--force", is_flag=True, help="Pull again even if present.")
def kernel_pull(name: str, force: bool) -> None:
    """Fetch a catalog kernel and build its initramfs."""
    m = session.call_with_progress(rpc.KERNEL_PULL, rpc.KernelPullParams(name, force))
    say(f"kernel {m['name']} {m['kernel_version']} ready")


@kernel.command("delete")
@click.argument("name")
def kernel_delete(name: str) -> None:
    """Delete a pulled kernel (refused while a VM uses it)."""
    session.call(rpc.KERNEL_DELETE, NameParams(name))
    click.echo(f"deleted kernel {name}")
