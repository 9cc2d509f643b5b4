"""`banger vm workspace ...`: ship a git repo into a VM, get commits and changes back out.

Git runs here, in the CLI, on the user's repo; the daemon moves the bytes through the agent.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from banger.cli import session
from banger.cli.vm_cmds import VM_ARG
from banger.rpc.methods import VmRef
from banger.rpc.methods.vm import VM_DELETE, VM_SHOW, DeleteParams
from banger.workspace import record_cwd

if TYPE_CHECKING:
    from banger.workspace.payload import ShipOptions

F = TypeVar("F", bound=Callable[..., Any])


def ship_options(fn: F) -> F:
    """Options shared by `vm run PATH` and `vm workspace prepare`."""
    for option in reversed([
        click.option("--guest-path", default="/root/repo", show_default=True,
                     help="Where the repo goes in the guest (under /root)."),
        click.option("--include-untracked", is_flag=True,
                     help="Also ship untracked files git does not ignore."),
        click.option("--full-history", is_flag=True, help="Ship all of HEAD's history."),
        click.option("--branch", help="Create and check out this branch in the guest."),
        click.option("--from", "from_ref", metavar="REF",
                     help="Start --branch at REF (ships REF's tree; local changes stay home)."),
        click.option("--no-bootstrap", is_flag=True, help="Skip `mise install` in the guest."),
        click.option("--dry-run", is_flag=True, help="Print the files that would ship; do nothing."),
    ]):
        fn = option(fn)
    return fn


def ship_opts(values: dict[str, Any]) -> ShipOptions:
    """ShipOptions from the values of ship_options (dry_run is not one of them)."""
    from banger.workspace.payload import ShipOptions

    return ShipOptions(values["guest_path"], values["include_untracked"],
                       values["full_history"], values["branch"], values["from_ref"],
                       not values["no_bootstrap"])


def print_dry_run(path: str, opts: ShipOptions) -> None:
    """The files that would ship on stdout, one a line; a summary on stderr."""
    from banger.workspace.payload import prepared

    with prepared(path, opts, build=False) as shipment:
        plan = shipment.plan
        for name in shipment.files:
            click.echo(name)
        changed = f", {len(plan.changes)} changed since HEAD" if plan.changes else ""
        click.echo(f"would ship {plan.files} files ({plan.bytes / 1e6:.1f} MB) from "
                   f"{plan.host_repo} at {plan.base[:12]}{changed} to {plan.guest_path}", err=True)
        for line in plan.changes:
            click.echo(f"  {line}", err=True)


def check_shippable(path: str, opts: ShipOptions) -> None:
    """Refuse bad input before anything is created (no payload is built)."""
    from banger.workspace.payload import prepared

    with prepared(path, opts, build=False):
        pass


def ship(vm: str, path: str, opts: ShipOptions, *, force: bool = False) -> dict[str, Any]:
    """Build the payload here and have the daemon install it in the VM."""
    from banger.rpc.methods.workspace import WORKSPACE_PREPARE, PrepareParams
    from banger.workspace.payload import prepared

    with prepared(path, opts) as shipment:
        assert shipment.payload is not None
        params = PrepareParams(vm, str(shipment.payload), shipment.plan, force)
        result: dict[str, Any] = session.call_with_progress(WORKSPACE_PREPARE, params)
    if result.get("tooling"):
        click.echo(result["tooling"], err=True)
    return result


def workspace_cwd(vm: str) -> tuple[str | None, dict[str, str] | None]:
    """The guest dir `vm exec` starts in, and the workspace record (None without one)."""
    record: dict[str, str] | None = session.call(VM_SHOW, VmRef(vm)).get("workspace")
    if not record:
        return None, None
    return record_cwd(record), record


def head_moved(record: dict[str, str]) -> str | None:
    """The host repo's HEAD when it differs from the one shipped, else None."""
    from banger.runner import run

    repo = Path(record.get("host_repo", ""))
    if not repo.is_dir():
        return None
    now = run(["git", "-C", repo, "rev-parse", "-q", "--verify", "HEAD"], check=False)
    head = now.stdout.strip()
    return head if now.ok and head and head != record.get("host_head") else None


def resync(vm: str, record: dict[str, str]) -> None:
    """Ship the recorded repo again with the options it was shipped with."""
    from banger.workspace.payload import ShipOptions

    opts = ShipOptions(record["guest_path"], record.get("include_untracked") == "true",
                       record.get("full_history") == "true", record.get("branch") or None,
                       None, False)
    target = Path(record["host_repo"]) / record.get("subdir", "")
    result = ship(vm, str(target), opts)
    click.echo(f"re-shipped {record['host_repo']} at {result['base'][:12]}", err=True)


def exec_cwd(vm: str, sync: bool) -> str:
    """Where `vm exec` starts: the workspace dir (re-shipped first with --sync), else /root."""
    from banger.errors import InvalidArgument

    cwd, record = workspace_cwd(vm)
    if record is None or cwd is None:
        if sync:
            raise InvalidArgument(f"VM {vm} has no workspace to sync; ship one with "
                                  f"`banger vm workspace prepare {vm} PATH`")
        return "/root"
    if sync:
        resync(vm, record)
    elif (moved := head_moved(record)) is not None:
        click.echo(f"warning: {record['host_repo']} HEAD moved since it was shipped "
                   f"({record['host_head'][:12]} -> {moved[:12]}); `banger vm exec --sync` "
                   "ships it again", err=True)
    return cwd


def ship_into_new_vm(vm: str, path: str, opts: ShipOptions) -> str:
    """Ship into a VM this command just created; the VM goes if shipping fails. Returns cwd."""
    try:
        return str(ship(vm, path, opts)["cwd"])
    except BaseException:
        session.call(VM_DELETE, DeleteParams(vm, force=True))
        raise


@click.group("workspace")
def workspace() -> None:
    """Ship a git repo into a VM and bring the guest's work back."""


@workspace.command("prepare")
@VM_ARG
@click.argument("path", type=click.Path())
@ship_options
@click.option("--force", is_flag=True, help="Replace the guest dir even with unexported work.")
def workspace_prepare(vm: str, path: str, dry_run: bool, force: bool, **values: Any) -> None:
    """Ship the repo containing PATH into a running VM; prints the base commit."""
    opts = ship_opts(values)
    if dry_run:
        print_dry_run(path, opts)
        return
    result = ship(vm, path, opts, force=force)
    click.echo(result["base"])


@workspace.command("export")
@VM_ARG
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Export file (default: ./banger-VM-export.tar).")
@click.option("--base", help="Export against this commit instead of the shipped one.")
def workspace_export(vm: str, output: str | None, base: str | None) -> None:
    """Write the guest's work (commits as a bundle, changes as a binary diff) to a tar."""
    from banger.rpc.methods.workspace import WORKSPACE_EXPORT, WorkspaceExportParams

    out = Path(output or f"banger-{vm}-export.tar").resolve()
    res = session.call_with_progress(WORKSPACE_EXPORT, WorkspaceExportParams(vm, str(out), base))
    click.echo(f"{out}: {res['commits']} commit(s), {res['files']} changed file(s); "
               f"apply with `banger vm workspace apply {vm} --file {out}`", err=True)


@workspace.command("apply")
@VM_ARG
@click.option("--file", "export_file", type=click.Path(exists=True, dir_okay=False),
              help="Apply this export instead of exporting now.")
@click.option("--repo", type=click.Path(file_okay=False),
              help="Host repo (default: the one the workspace was shipped from).")
@click.option("--branch", help="Branch for the guest's commits (default: the branch the "
              "workspace was shipped from, else banger/VM).")
def workspace_apply(vm: str, export_file: str | None, repo: str | None,
                    branch: str | None) -> None:
    """Bring the guest's commits onto a branch and its changes into the host work tree."""
    import tempfile

    from banger.rpc.methods.workspace import WORKSPACE_EXPORT, WorkspaceExportParams
    from banger.workspace import exportfile
    from banger.workspace.apply import apply_export, summary

    with tempfile.TemporaryDirectory(prefix="banger-export-") as tmp:
        path = Path(export_file or Path(tmp) / "export.tar")
        if export_file is None:
            session.call_with_progress(WORKSPACE_EXPORT, WorkspaceExportParams(vm, str(path)))
        export = exportfile.read_file(path)
    try:
        host_repo = repo or (export.record.host_repo if export.record else None)
        if host_repo is None and export_file is not None:  # an export without a record
            host_repo = (workspace_cwd(vm)[1] or {}).get("host_repo")
        target = Path(host_repo or ".")
        applied = apply_export(export, target, vm=vm, branch=branch)
    finally:
        export.remove()
    click.echo(summary(applied, target))
    if applied.conflicts:
        sys.exit(1)
