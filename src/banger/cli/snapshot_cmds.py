"""`banger vm snapshot create|list|delete|restore` and `banger vm fork`."""

from __future__ import annotations

from typing import Any

import click

from banger.cli import session
from banger.cli.output import print_json, print_table, say
from banger.rpc.methods import VmRef
from banger.rpc.methods import snapshot as rpc


def _size(n: int) -> str:
    from banger.download import human_bytes

    return human_bytes(n)


@click.group("snapshot")
def snapshot() -> None:
    """Checkpoints of a VM: memory and disk, taken live; restore never loses the current state."""


@snapshot.command("create")
@click.argument("vm")
@click.option("--name", help="Checkpoint name (default: snap-<UTC time>).")
def snapshot_create(vm: str, name: str | None) -> None:
    """Checkpoint VM: a running VM pauses for a moment and keeps running."""
    res = session.call_with_progress(rpc.SNAPSHOT_CREATE, rpc.SnapshotCreateParams(vm, name))
    what = "memory and disk" if res["memory"] else "disk only"
    say(f"checkpoint {res['name']} of {vm} ({what}, {_size(res['size_bytes'])})")


@snapshot.command("list")
@click.argument("vm")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def snapshot_list(vm: str, as_json: bool) -> None:
    """VM's checkpoints, oldest first."""
    rows: list[dict[str, Any]] = session.call(rpc.SNAPSHOT_LIST, VmRef(vm))
    if as_json:
        print_json(rows)
        return
    print_table(["NAME", "CREATED", "SIZE", "MEMORY", "AUTO"],
                [[r["name"], r["created"], _size(r["size_bytes"]), "yes" if r["memory"] else "no",
                  "yes" if r["auto"] else "-"] for r in rows],
                empty=f"no checkpoints: `banger vm snapshot create {vm}` takes one")


@snapshot.command("delete")
@click.argument("vm")
@click.argument("name")
def snapshot_delete(vm: str, name: str) -> None:
    """Delete checkpoint NAME of VM."""
    res = session.call(rpc.SNAPSHOT_DELETE, rpc.SnapshotRef(vm, name))
    say(f"deleted checkpoint {res['name']} of {vm}")


@snapshot.command("restore")
@click.argument("vm")
@click.argument("name")
@click.option("--discard", is_flag=True,
              help="Do not checkpoint the current state first (it is lost).")
def snapshot_restore(vm: str, name: str, discard: bool) -> None:
    """Put VM back to checkpoint NAME; the current state is checkpointed first (auto-...)."""
    res = session.call_with_progress(rpc.SNAPSHOT_RESTORE,
                                     rpc.SnapshotRestoreParams(vm, name, discard))
    say(f"{vm} restored to checkpoint {res['restored']} ({res['state']})")
    if res["auto"]:
        say(f"the state before is checkpoint {res['auto']}: "
            f"`banger vm snapshot restore {vm} {res['auto']}` brings it back")


@click.command("fork")
@click.argument("vm")
@click.option("--name", help="The fork's name; with --count, the prefix (NAME-1, NAME-2, ...).")
@click.option("--count", type=click.IntRange(1, 16), default=1, show_default=True,
              help="How many forks.")
@click.option("--json", "as_json", is_flag=True, help="Print the new VMs' records as JSON.")
def vm_fork(vm: str, name: str | None, count: int, as_json: bool) -> None:
    """New running VMs from VM's current memory and disk; VM keeps running."""
    forks: list[dict[str, Any]] = session.call_with_progress(
        rpc.VM_FORK, rpc.ForkParams(vm, name, count), quiet=as_json)
    if as_json:
        print_json(forks)
        return
    for f in forks:
        say(f"{f['name']} running (a fork of {vm})")
