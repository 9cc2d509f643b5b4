"""`banger agent list|pull`, `banger vm acp` (an editor's agent server) and the helpers
`vm run --agent` uses. docs/agents.md."""

from __future__ import annotations

import contextlib
import os
import re
import sys
from typing import Any

import click

from banger.cli import session
from banger.cli.output import print_json, print_table, say
from banger.cli.vm_cmds import NET_OPTIONS, VM_ARG, net_fields
from banger.rpc.methods import NoParams, VmRef
from banger.rpc.methods import agent as rpc
from banger.textsafe import one_line

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")  # fullmatch only
PASS_ENV = click.option("--pass-env", "pass_env", multiple=True, metavar="NAME",
                        help="Forward this host variable to the agent process only (repeatable).")


def net_options(fn: Any) -> Any:
    """--net/--nat/-p/--allow for a VM `vm acp --path` creates (--allow its model's API only)."""
    for option in reversed(NET_OPTIONS):
        fn = option(fn)
    return fn


@click.group()
def agent() -> None:
    """Coding agents for VMs: fetched from the npm registry npm is set up with, verified, cached."""


@agent.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def agent_list(as_json: bool) -> None:
    """Agents banger can fetch, whether they speak ACP, and the versions cached here."""
    rows: list[dict[str, Any]] = session.call(rpc.AGENT_LIST, NoParams())
    if as_json:
        print_json(rows)
        return
    print_table(["NAME", "PACKAGE", "ACP", "CACHED", "DESCRIPTION"],
                [[r["name"], r["package"], "yes" if r["acp"] else "no",
                  ", ".join(r["cached"]) or "-", r["description"]] for r in rows])


@agent.command("pull")
@click.argument("ref", metavar="NAME[@VERSION]")
@click.option("--force", is_flag=True, help="Fetch again even if that version is cached.")
def agent_pull(ref: str, force: bool) -> None:
    """Fetch an agent (VERSION: an npm version or dist-tag, default latest) into the cache."""
    from banger.agents.catalog import parse_ref
    from banger.agents.registry import configured_registry

    spec, version = parse_ref(ref)
    registry = configured_registry(spec.package)
    m = session.call_with_progress(rpc.AGENT_PULL, rpc.AgentPullParams(
        spec.name, version, registry, force))
    how = "already cached, not fetched again" if m["cached"] else \
        f"fetched from {one_line(m['registry'], 200)}"
    say(f"{m['name']} {m['version']}: {how}; {m['package']}@{m['npm_version']} matched the "
        f"registry's integrity {m['integrity'][:23]}... ({one_line(m['dir'], 300)})")


@agent.command("install")
@VM_ARG
@click.argument("ref", metavar="NAME[@VERSION]")
def agent_install(vm: str, ref: str) -> None:
    """Put an agent into a running VM (on its PATH as NAME), fetching it first if needed."""
    got = install_agent(vm, ref)
    how = "shipped" if got["shipped"] else "already there"
    say(f"{got['name']} {got['version']} in {vm} at {one_line(got['path'], 300)} ({how}); "
        f"on PATH as {got['name']}")


def passed_env(names: tuple[str, ...]) -> dict[str, str]:
    """The named host variables, for the agent process only (never stored by banger)."""
    from banger.errors import InvalidArgument

    env = {}
    for name in names:
        if not ENV_NAME.fullmatch(name):
            raise InvalidArgument(f"--pass-env {name[:60]!r}: not an environment variable name")
        if name not in os.environ:
            raise InvalidArgument(f"--pass-env {name}: it is not set in this environment")
        env[name] = os.environ[name]
    return env


def install_agent(vm: str, ref: str) -> dict[str, Any]:
    """The agent (NAME[@VERSION]) in the running VM; its guest path and how to start it."""
    from banger.agents.catalog import parse_ref
    from banger.agents.registry import user_registry

    spec, version = parse_ref(ref)
    params = rpc.AgentInstallParams(vm, spec.name, version, user_registry(spec.package))
    result: dict[str, Any] = session.call_with_progress(rpc.AGENT_INSTALL, params)
    return result


def _ready_vm(vm: str, path: str | None, image: str | None) -> str:
    """The VM running (made, with PATH's repo shipped, when there is none); returns its cwd."""
    from banger.cli import workspace_cmds as ws
    from banger.errors import NotFound
    from banger.rpc.methods import vm as vms
    from banger.workspace.payload import ShipOptions

    opts = ShipOptions()
    try:
        show: dict[str, Any] = session.call(vms.VM_SHOW, VmRef(vm))
    except NotFound:
        if path is None:
            raise NotFound(f"no VM named {vm}; give --path REPO to create it with a repo, "
                           f"or create it first (`banger vm create --name {vm}`)") from None
        ws.check_shippable(path, opts)  # bad input is refused before a VM exists
        session.call_with_progress(vms.VM_CREATE, vms.CreateRequest(
            name=vm, image=image, start=True, **net_fields()))
        return ws.ship_into_new_vm(vm, path, opts)
    if show["state"] != "running":
        session.call_with_progress(vms.VM_START, vms.StartParams(vm))
    cwd, record = ws.workspace_cwd(vm)
    if record is None and path is not None:
        return str(ws.ship(vm, path, opts)["cwd"])
    if record is not None and path is not None:
        from pathlib import Path

        shipped, given = Path(record.get("host_repo", "")), Path(path).resolve()
        if shipped != given and shipped not in given.parents:
            click.echo(f"warning: {vm} holds {one_line(str(shipped), 200)}, not {given}; "
                       "--path ships only into a new VM", err=True)
    return cwd or "/root"


@click.command("acp")
@VM_ARG
@click.option("--agent", "ref", default="opencode", show_default=True, metavar="NAME[@VERSION]",
              help="The agent; without VERSION the newest cached one (else latest is fetched).")
@click.option("--path", type=click.Path(), help="With no such VM: create it and ship this repo.")
@click.option("--image", help="The image of a VM --path creates (default: config default_image).")
@net_options
@PASS_ENV
def vm_acp(vm: str, ref: str, path: str | None, image: str | None,
           pass_env: tuple[str, ...]) -> None:
    """Serve the Agent Client Protocol on stdio from an agent in VM's workspace (for editors).

    stdout carries nothing but the agent's protocol; progress and errors go to stderr.
    """
    from banger.agents.catalog import parse_ref
    from banger.cli.acp_bridge import bridge
    from banger.errors import InvalidArgument
    from banger.rpc.methods.vm import VM_EXEC, ExecParams

    spec, _ = parse_ref(ref)
    if spec.acp is None:
        raise InvalidArgument(f"{spec.name} has no ACP mode: {spec.no_acp}")
    env = {"HOME": "/root", **passed_env(pass_env)}
    with contextlib.redirect_stdout(sys.stderr):  # whatever is printed, never into the protocol
        cwd = _ready_vm(vm, path, image)
        got = install_agent(vm, ref)
    params = ExecParams(vm, argv=[got["path"], *(got["acp"] or [])], env=env, cwd=cwd, stdin=True)
    # Through the guard: the agent gets no editor file or terminal access (docs/agents.md).
    sys.exit(bridge(session.client().start(VM_EXEC, params)))


def start_agent_session(vm: str, ref: str, cwd: str, env: dict[str, str]) -> str:
    """The agent's terminal UI as a guest session (PTY) in cwd; returns the session name."""
    from banger.cli.terminal import terminal_size
    from banger.rpc.methods.session import SESSION_START, SessionStartParams

    got = install_agent(vm, ref)
    rows, cols = terminal_size()
    params = SessionStartParams(vm, [got["path"], *got["ui"]], cwd=cwd,
                                env={"HOME": "/root", **env}, tty=True, rows=rows, cols=cols,
                                term=os.environ.get("TERM", "xterm-256color"))
    return one_line(session.call(SESSION_START, params)["name"], limit=63)


def run_agent(ctx: click.Context, vm: str, ref: str, cwd: str, env: dict[str, str], *,
              detach: bool) -> None:
    """`vm run --agent`: the agent's UI as a session, then attached (unless -d)."""
    from banger.cli.session_cmds import session_attach

    name = start_agent_session(vm, ref, cwd, env)
    if detach:
        say(f"{vm} runs the agent as session {name}: `banger vm session attach {vm} {name}` "
            f"(Ctrl-] detaches); stop the VM with `banger vm stop {vm}`")
        return
    ctx.invoke(session_attach, vm=vm, name=name, read_only=False, lines=20)
