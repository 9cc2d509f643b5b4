"""`banger vm ...` lifecycle commands (exec, shell and run live in vm_exec.py)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

from banger.cli import session
from banger.cli.lazy import LazyGroup
from banger.cli.output import error, print_json, print_table, say
from banger.cli.params import TIMEOUT, VCPU, check_allow, check_publish
from banger.rpc.methods import VmRef
from banger.rpc.methods import vm as rpc
from banger.textsafe import clean, one_line

F = TypeVar("F", bound=Callable[..., Any])


def _fmt_mib(mib: int) -> str:
    from banger.config.sizes import format_size_mib

    return format_size_mib(mib)


def size_option(name: str, help_text: str) -> Callable[[F], F]:
    return click.option(name, help=help_text, metavar="SIZE")


def to_mib(value: str | None, what: str) -> int | None:
    if value is None:
        return None
    from banger.config.sizes import parse_size_mib
    from banger.errors import InvalidArgument

    try:
        return parse_size_mib(value, what=what)
    except InvalidArgument as exc:
        raise click.BadParameter(exc.message, param_hint=f"--{what}") from None


def complete_vm(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Live VM names from the daemon; nothing when it is not running."""
    try:
        vms = session.client(autostart=False).call(rpc.VM_LIST, rpc.VmListParams(all=True))
    except Exception:
        return []
    return [v["name"] for v in vms if v["name"].startswith(incomplete)]


VM_ARG = click.argument("vm", shell_complete=complete_vm)
VMS_ARG = click.argument("vms", nargs=-1, required=True, metavar="VM...", shell_complete=complete_vm)


def for_each_vm(vms: tuple[str, ...], act: Callable[[str], str]) -> None:
    """Act on every VM named, even after one fails (like `docker rm a b`); exit with the
    last failure's code."""
    from banger.errors import BangerError

    failed: BangerError | None = None
    for vm in vms:
        try:
            say(act(vm))
        except BangerError as exc:
            if len(vms) == 1:
                raise
            error(str(exc))
            failed = exc
    if failed is not None:
        sys.exit(failed.exit_code)


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("-a/-r", "--all/--running", "show_all", default=True, help="All VMs or running only.")
def vm_list(as_json: bool, show_all: bool) -> None:
    """List VMs."""
    vms: list[dict[str, Any]] = session.call(rpc.VM_LIST, rpc.VmListParams(all=show_all))
    if as_json:
        print_json(vms)
        return
    print_table(
        ["ID", "NAME", "STATE", "IMAGE", "IP", "VCPU", "MEM", "DISK", "CREATED"],
        [[v["id"][:8], v["name"], v["state"], v["image"], v.get("ip") or "-", v["vcpu"],
          f"{v['memory_mib']} MiB", _fmt_mib(v["disk_mib"]), v["created_at"]] for v in vms],
        empty="no VMs yet: `banger vm run` starts one",
    )


@click.group(cls=LazyGroup, lazy={
    "acp": "banger.cli.agent_cmds:vm_acp",
    "exec": "banger.cli.vm_exec:vm_exec",
    "cp": "banger.cli.cp_cmds:vm_cp",
    "shell": "banger.cli.vm_exec:vm_shell",
    "run": "banger.cli.vm_exec:vm_run",
    "workspace": "banger.cli.workspace_cmds:workspace",
    "template": "banger.cli.template_cmds:template",
    "pool": "banger.cli.pool_cmds:pool",
    "snapshot": "banger.cli.snapshot_cmds:snapshot",
    "fork": "banger.cli.snapshot_cmds:vm_fork",
    "session": "banger.cli.session_cmds:session_group",
    "ssh": "banger.cli.net_cmds:vm_ssh",
    "ssh-proxy": "banger.cli.net_cmds:vm_ssh_proxy",
    "ports": "banger.cli.net_cmds:vm_ports",
    "forward": "banger.cli.net_cmds:vm_forward",
})
def vm() -> None:
    """Create, run and manage VMs."""


vm.add_command(vm_list)
vm.add_command(vm_list, "ps")


def _keep_net(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Network options ride in ctx.meta so create/run signatures stay as they are."""
    if param.name == "publish" and value:
        check_publish(value)
    if param.name == "allow" and value:
        check_allow(value)
    ctx.meta.setdefault("net_params", {})[param.name or ""] = value
    return value


NET_OPTIONS = [
    click.option("--net", type=click.Choice(["auto", "tap", "user"]), expose_value=False,
                 callback=_keep_net, help="Network mode (default: config network_mode)."),
    click.option("--nat", is_flag=True, expose_value=False, callback=_keep_net,
                 help="Let the guest reach outside networks (NAT / unrestricted user mode)."),
    click.option("--publish", "-p", multiple=True, metavar="HOST:GUEST", expose_value=False,
                 callback=_keep_net, help="Publish a guest port on 127.0.0.1 (repeatable)."),
    click.option("--allow", multiple=True, metavar="RULE", expose_value=False,
                 callback=_keep_net,
                 help="Let the guest reach only this: HOST[:PORT], *.DOMAIN[:PORT], IP[:PORT], "
                      "CIDR[:PORT] or host.banger.internal:PORT (repeatable; default: "
                      "config egress_allow)."),
]


def net_fields() -> dict[str, Any]:
    """The CreateRequest fields NET_OPTIONS collected."""
    net = click.get_current_context().meta.get("net_params", {})
    return {"net": net.get("net"), "nat": bool(net.get("nat")),
            "publish": list(net.get("publish") or []), "allow": list(net.get("allow") or []) or None}


def create_options(fn: Any) -> Any:
    for option in reversed([
        click.option("--name", help="VM name (default: a generated adjective-noun)."),
        click.option("--image", help="Image name (default: config default_image)."),
        click.option("--kernel", help="Kernel name (default: the image's kernel)."),
        click.option("--vcpu", type=VCPU, help="Virtual CPUs (default: config/host-aware)."),
        size_option("--memory", "Memory, e.g. 1G or 1536M (default: config/host-aware)."),
        size_option("--disk", "Root disk size, e.g. 8G (default: config, 8G)."),
        click.option("--cold", is_flag=True, help="Boot normally instead of restoring a template."),
        *NET_OPTIONS,
    ]):
        fn = option(fn)
    return fn


def create_params(name: str | None, image: str | None, kernel: str | None, vcpu: int | None,
                  memory: str | None, disk: str | None, *, start: bool,
                  cold: bool) -> rpc.CreateRequest:
    return rpc.CreateRequest(name=name, image=image, kernel=kernel, vcpu=vcpu,
                             memory_mib=to_mib(memory, "memory"), disk_mib=to_mib(disk, "disk"),
                             start=start, cold=cold, **net_fields())


@vm.command("create")
@create_options
@click.option("--no-start", is_flag=True, help="Create without booting.")
def vm_create(name: str | None, image: str | None, kernel: str | None, vcpu: int | None,
              memory: str | None, disk: str | None, cold: bool, no_start: bool) -> None:
    """Create a VM (and start it unless --no-start)."""
    params = create_params(name, image, kernel, vcpu, memory, disk, start=not no_start, cold=cold)
    vm_ = session.call_with_progress(rpc.VM_CREATE, params)
    say(f"{vm_['name']} {vm_['state']}")


@vm.command("start")
@VMS_ARG
@click.option("--cold", is_flag=True, help="Boot from the disk even if a saved state exists.")
def vm_start(vms: tuple[str, ...], cold: bool) -> None:
    """Start stopped VMs (resuming a saved state after `vm stop --save`)."""
    for_each_vm(vms, lambda vm: session.call_with_progress(
        rpc.VM_START, rpc.StartParams(vm, cold=cold))["name"] + " running")


@vm.command("stop")
@VMS_ARG
@click.option("--timeout", type=TIMEOUT, default=20.0, show_default=True,
              help="Seconds before forcing.")
@click.option("--save", is_flag=True, help="Save memory state; `vm start` resumes right there.")
def vm_stop(vms: tuple[str, ...], timeout: float, save: bool) -> None:
    """Stop VMs: guest poweroff, then VMM quit, then kill (or save their state with --save)."""
    def stop(vm: str) -> str:
        res = session.call_with_progress(rpc.VM_STOP, rpc.StopParams(vm, timeout, save))
        return f"{res['name']} {res['state']}"

    for_each_vm(vms, stop)


@vm.command("restart")
@VM_ARG
def vm_restart(vm: str) -> None:
    """Stop and start a VM."""
    say(f"{session.call_with_progress(rpc.VM_RESTART, rpc.RestartParams(vm))['name']} running")


@vm.command("kill")
@VMS_ARG
def vm_kill(vms: tuple[str, ...]) -> None:
    """Kill VMs' VMMs at once (when stop hangs)."""
    for_each_vm(vms, lambda vm: f"{session.call(rpc.VM_KILL, VmRef(vm))['name']} killed")


@vm.command("delete")
@VMS_ARG
@click.option("-f", "--force", is_flag=True, help="Delete even if running.")
def vm_delete(vms: tuple[str, ...], force: bool) -> None:
    """Delete VMs and their disks (irreversible)."""
    for_each_vm(vms, lambda vm: "deleted " + session.call_with_progress(
        rpc.VM_DELETE, rpc.DeleteParams(vm, force))["name"])


@vm.command("show")
@VM_ARG
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the only view today).")
def vm_show(vm: str, as_json: bool) -> None:
    """Show a VM (JSON)."""
    print_json(session.call(rpc.VM_SHOW, VmRef(vm)))


@vm.command("set")
@VM_ARG
@click.option("--vcpu", type=VCPU, help="Virtual CPUs (VM stopped).")
@size_option("--memory", "Memory (VM stopped).")
@size_option("--disk", "Grow the root disk (VM stopped).")
@click.option("--allow", multiple=True, metavar="RULE",
              help="Add an egress rule (live on a running VM; repeatable).")
@click.option("--deny", multiple=True, metavar="RULE",
              help="Remove an egress rule: what it allowed is refused at once, open "
                   "connections included (repeatable).")
def vm_set(vm: str, vcpu: int | None, memory: str | None, disk: str | None,
           allow: tuple[str, ...], deny: tuple[str, ...]) -> None:
    """Change a VM's vcpu, memory or disk size, or its egress rules."""
    check_allow(allow)
    check_allow(deny, "--deny")
    res = session.call(rpc.VM_SET, rpc.SetParams(vm, vcpu, to_mib(memory, "memory"),
                                                 to_mib(disk, "disk"), list(allow), list(deny)))
    say(f"{res['name']}: {res['vcpu']} vcpu · {res['memory_mib']} MiB · "
        f"{_fmt_mib(res['disk_mib'])} disk")
    if allow or deny:
        say(clean(f"egress: {', '.join(res['egress']) or 'none'}"))


@vm.command("prune")
@click.option("-f", "--force", is_flag=True, help="Don't ask.")
def vm_prune(force: bool) -> None:
    """Delete every VM that is not running."""
    doomed = session.call(rpc.VM_PRUNE, rpc.PruneParams(dry_run=True))["deleted"]
    if not doomed:
        click.echo("nothing to prune")
        return
    if not force:
        click.confirm(clean(f"delete {len(doomed)} VM(s): {', '.join(doomed)}?"), abort=True)
    res = session.call_with_progress(rpc.VM_PRUNE, rpc.PruneParams(dry_run=False))
    for name in res["deleted"]:
        say(f"deleted {name}")
    for line in res["failed"]:
        say(f"failed: {one_line(line)}", err=True)


@vm.command("logs")
@VM_ARG
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output.")
@click.option("--raw", is_flag=True,
              help="Keep the guest's escape sequences even on a terminal (they always stay "
                   "when piped).")
@click.option("--egress", is_flag=True,
              help="Instead: the VM's egress rules and every name and address it was refused.")
def vm_logs(vm: str, follow: bool, raw: bool, egress: bool) -> None:
    """Print a VM's serial console; on a terminal without the guest's escape sequences."""
    from pathlib import Path

    if egress:
        if follow or raw:
            raise click.UsageError("--egress prints the refusals so far; drop -f/--raw")
        return _egress_log(vm)

    from banger.logfiles import Follower, rotated
    from banger.textsafe import TerminalFilter

    where = session.call(rpc.VM_LOGS, VmRef(vm))
    path = Path(where["path"])
    out = sys.stdout.buffer
    # The guest wrote these bytes: on a terminal they could retitle it or rewrite what it shows.
    safe = None if raw or not sys.stdout.isatty() else TerminalFilter()
    try:
        with open(rotated(path), "rb") as older:  # the part moved aside when the log was rotated
            while chunk := older.read(1 << 20):
                out.write(safe.feed(chunk) if safe else chunk)
    except FileNotFoundError:
        if not path.exists():
            say(f"{where['name']} has no console output yet")
            return
    follower = Follower(path)
    while True:
        chunk = follower.read()
        if chunk:
            out.write(safe.feed(chunk) if safe else chunk)
            out.flush()
        elif not follow:
            return
        else:
            time.sleep(0.2)


def _egress_log(vm: str) -> None:
    report = session.call(rpc.VM_EGRESS, VmRef(vm))
    say(clean(f"{report['name']} may reach: {', '.join(report['rules']) or 'nothing'}"))
    if not report["denied"]:
        say("nothing refused")
    for row in report["denied"]:  # names and addresses the guest asked for: guest text
        say(clean(f"{row['time']}  refused {row['kind']:<3}  {row['target']}"))
