"""`banger vm exec`, `vm shell` and `vm run`: commands and shells in guests, exit codes passed on."""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import click
import msgspec

from banger.cli import agent_cmds as agent
from banger.cli import session
from banger.cli.agent_cmds import PASS_ENV
from banger.cli.output import say
from banger.cli.params import DashDashCommand
from banger.cli.vm_cmds import VM_ARG, create_options, create_params
from banger.cli.workspace_cmds import ship_options
from banger.errors import NotFound
from banger.rpc.methods.vm import VM_CREATE, VM_DELETE, VM_EXEC, DeleteParams, ExecParams

LOGIN_SHELL = "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi"


def run_in_guest(vm: str, command: list[str], *, interactive: bool, tty: bool,
                 cwd: str = "/root") -> int:
    from banger.cli.terminal import stream, terminal_size

    rows, cols = terminal_size()
    params = ExecParams(vm, argv=command or None, shell=None if command else LOGIN_SHELL,
                        env={"HOME": "/root"}, cwd=cwd, stdin=interactive, tty=tty, rows=rows,
                        cols=cols)
    if tty:
        import os

        params.term = os.environ.get("TERM", "xterm-256color")
    call = session.client().start(VM_EXEC, params)
    return stream(call, forward_stdin=interactive, tty=tty)


def _modes(command: list[str], interactive: bool | None, tty: bool | None) -> tuple[bool, bool]:
    """Defaults: a shell on a terminal gets a PTY; piped stdin is always forwarded."""
    stdin_tty = sys.stdin.isatty()
    want_tty = tty if tty is not None else (not command and stdin_tty and sys.stdout.isatty())
    if want_tty and not stdin_tty:
        raise click.UsageError("-t needs a terminal on stdin")
    want_stdin = interactive if interactive is not None else (want_tty or not stdin_tty)
    return want_stdin, want_tty


@click.command("exec", cls=DashDashCommand)
@VM_ARG
@click.option("-i", "--interactive/--no-interactive", default=None, help="Forward stdin.")
@click.option("-t", "--tty/--no-tty", default=None, help="Allocate a PTY in the guest.")
@click.option("--sync", is_flag=True, help="Re-ship the workspace repo first.")
@click.pass_context
def vm_exec(ctx: click.Context, vm: str, interactive: bool | None, tty: bool | None,
            sync: bool) -> None:
    """Run a command in a running VM (in its workspace, if any): banger vm exec VM -- CMD..."""
    from banger.cli.workspace_cmds import exec_cwd

    command: list[str] = ctx.meta["guest_command"]
    if not command:
        raise click.UsageError("give the command after --, e.g. banger vm exec NAME -- uname -a")
    stdin, pty = _modes(command, interactive, tty)
    sys.exit(run_in_guest(vm, command, interactive=stdin, tty=pty, cwd=exec_cwd(vm, sync)))


@click.command("shell")
@VM_ARG
def vm_shell(vm: str) -> None:
    """Open an interactive shell in a running VM."""
    stdin, pty = _modes([], None, None)
    sys.exit(run_in_guest(vm, [], interactive=stdin, tty=pty))


@click.command("run", cls=DashDashCommand)
@create_options
@click.option("--rm", "remove", is_flag=True,
              help="Delete the VM when the command or shell ends, or this CLI does.")
@click.option("-d", "--detach", is_flag=True, help="Leave the VM running and print how to reach it.")
@click.option("-i", "--interactive/--no-interactive", default=None, help="Forward stdin.")
@click.option("-t", "--tty/--no-tty", default=None, help="Allocate a PTY in the guest.")
@click.option("--agent", "agent_ref", metavar="NAME[@VERSION]",
              help="Run this coding agent's terminal UI as a session (`banger agent list`).")
@PASS_ENV
@click.argument("path", required=False, type=click.Path())
@ship_options
@click.pass_context
def vm_run(ctx: click.Context, /, name: str | None, image: str | None, kernel: str | None,
           vcpu: int | None, memory: str | None, disk: str | None, cold: bool, remove: bool,
           detach: bool, interactive: bool | None, tty: bool | None, agent_ref: str | None,
           pass_env: tuple[str, ...], path: str | None, dry_run: bool, **ship: Any) -> None:
    """Create and boot a VM, then run a command (exit code passed on) or a shell.

    banger vm run [OPTIONS] [PATH] [-- CMD...]: with PATH, the git repo holding it is shipped
    to /root/repo (see `banger vm workspace --help`) and the command starts there.
    """
    from banger.cli import workspace_cmds as ws

    command: list[str] = ctx.meta["guest_command"]
    if detach and remove:
        raise click.UsageError("-d/--detach cannot be combined with --rm")
    if agent_ref and (command or remove):
        raise click.UsageError("--agent runs the agent as a session: no -- CMD, no --rm")
    if pass_env and not agent_ref:
        raise click.UsageError("--pass-env goes with --agent")
    agent_env = agent.passed_env(pass_env) if agent_ref else {}
    ship_to = ws.ship_opts(ship) if path else None
    if dry_run:
        if path is None or ship_to is None:
            raise click.UsageError("--dry-run needs a PATH")
        ws.print_dry_run(path, ship_to)
        return
    if path and ship_to:
        ws.check_shippable(path, ship_to)  # bad input is refused before a VM exists
    stdin, pty = (False, False) if detach else _modes(command, interactive, tty)
    params = create_params(name, image, kernel, vcpu, memory, disk, start=True, cold=cold)
    # With --rm the daemon deletes the VM once this process exits, even by SIGKILL or SIGHUP.
    params = msgspec.structs.replace(params, remove_with_client=remove)
    created = session.call_with_progress(VM_CREATE, params)
    vm_name = created["name"]
    code = 1
    try:
        cwd = ws.ship_into_new_vm(vm_name, path, ship_to) if path and ship_to else "/root"
        if agent_ref:
            agent.run_agent(ctx, vm_name, agent_ref, cwd, agent_env, detach=detach)
            return
        if detach:
            _detached(vm_name, command, cwd, tty=bool(tty))
            return
        code = run_in_guest(vm_name, command, interactive=stdin, tty=pty, cwd=cwd)
    finally:
        if remove:
            _delete_gone_or_not(vm_name)
        elif not detach:
            say(f"{vm_name} keeps running; stop it with `banger vm stop {vm_name}` "
                f"or remove it with `banger vm delete -f {vm_name}`", err=True)
    sys.exit(code)


def _detached(vm_name: str, command: list[str], cwd: str, *, tty: bool) -> None:
    """-d: the VM keeps running; a command becomes a guest session that outlives this CLI."""
    if not command:
        say(f"{vm_name} is running: `banger vm shell {vm_name}`, "
            f"`banger vm exec {vm_name} -- CMD`; stop it with `banger vm stop {vm_name}`")
        return
    from banger.rpc.methods.session import SESSION_START, SessionStartParams
    from banger.textsafe import one_line

    started = session.call(SESSION_START, SessionStartParams(vm_name, command, cwd=cwd, tty=tty))
    name = one_line(started["name"], limit=63)
    say(f"{vm_name} runs it as session {name}: `banger vm session logs -f {vm_name} {name}`, "
        f"`banger vm session attach {vm_name} {name}`; stop the VM with "
        f"`banger vm stop {vm_name}`")


def _delete_gone_or_not(vm_name: str) -> None:
    """The fast path of --rm; the daemon may have deleted the VM already."""
    with contextlib.suppress(NotFound):
        session.call(VM_DELETE, DeleteParams(vm_name, force=True))
