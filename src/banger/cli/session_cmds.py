"""`banger vm session ...`: guest-owned sessions that outlive the CLI and the daemon.

Session metadata (names, commands, paths) comes from the guest and is printed through
banger.textsafe; a session's output (`logs`, `attach`) is the program's own and is written raw,
as `vm exec` writes it.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
import threading
from typing import Any, BinaryIO

import click

from banger.cli import session
from banger.cli.output import print_json, print_table, say
from banger.cli.params import DashDashCommand
from banger.cli.vm_cmds import VM_ARG
from banger.durable import write_all
from banger.rpc.methods import session as rpc
from banger.textsafe import one_line

DETACH_KEY = b"\x1d"  # Ctrl-], as telnet
DETACH_NAME = "Ctrl-]"
SESSION_ARG = click.argument("name", metavar="SESSION")


def _size(value: str) -> int:
    """Bytes from 4096, 64K, 8M, 1G."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = value.strip().upper().removesuffix("B").removesuffix("I")
    factor = units.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in units else text
    if not number.isdigit():
        raise click.BadParameter(f"{value!r} is not a size like 65536, 64K or 8M",
                                 param_hint="--log-cap")
    return int(number) * factor


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def _status(s: dict[str, Any]) -> str:
    if s["state"] == "running":
        return "running"
    if s.get("lost"):
        return "exited (lost: the guest rebooted)"
    if s.get("signal") is not None:
        return f"exited (signal {s['signal']})"
    return f"exited ({s.get('exit_code')})"


def _command(s: dict[str, Any]) -> str:
    import shlex

    return one_line(shlex.join(str(a) for a in s.get("argv") or []), limit=200)


@click.group()
def session_group() -> None:
    """Long-lived commands owned by the guest: they survive the CLI, the daemon and reconnects."""


@session_group.command("start", cls=DashDashCommand)
@VM_ARG
@click.option("--name", help="Session name (default: generated).")
@click.option("--cwd", help="Working directory (default: the workspace, else /root).")
@click.option("--env", "env", multiple=True, metavar="K=V", help="Add to the environment.")
@click.option("-t", "--tty", is_flag=True, help="Run it on a PTY (for shells and TUIs).")
@click.option("--log-cap", help="Output kept in the guest (default 8M; oldest dropped).")
@click.pass_context
def session_start(ctx: click.Context, vm: str, name: str | None, cwd: str | None,
                  env: tuple[str, ...], tty: bool, log_cap: str | None) -> None:
    """Start a session: banger vm session start VM [--name N] -- CMD...; prints its name."""
    command: list[str] = ctx.meta["guest_command"]
    if not command:
        raise click.UsageError("give the command after --, e.g. "
                               "banger vm session start VM -- python3 -m http.server")
    pairs = {}
    for item in env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not K=V", param_hint="--env")
        pairs[key] = value
    if name is not None:
        from banger.agent.sessions import check_name

        check_name(name)
    from banger.cli.terminal import terminal_size

    rows, cols = terminal_size()
    params = rpc.SessionStartParams(vm, command, name=name, cwd=cwd, env=pairs, tty=tty,
                                    rows=rows, cols=cols,
                                    log_cap=_size(log_cap) if log_cap else None)
    if tty:
        params.term = os.environ.get("TERM", "xterm-256color")
    started = session.call(rpc.SESSION_START, params)
    say(one_line(started["name"], limit=63))


@session_group.command("list")
@click.argument("vm", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def session_list(vm: str | None, as_json: bool) -> None:
    """List sessions of VM (default: of every running VM)."""
    rows: list[dict[str, Any]] = session.call(rpc.SESSION_LIST, rpc.SessionListParams(vm))
    if as_json:
        print_json(rows)
        return
    print_table(["VM", "NAME", "STATE", "PID", "STARTED", "COMMAND"],
                [[s["vm"], s["name"], _status(s), s.get("pid") or "-", _when(s.get("started")),
                  _command(s)] for s in rows],
                empty="no sessions: `banger vm session start VM -- CMD` starts one")


@session_group.command("show")
@VM_ARG
@SESSION_ARG
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def session_show(vm: str, name: str, as_json: bool) -> None:
    """A session's state, command, pid, times and exit status."""
    s: dict[str, Any] = session.call(rpc.SESSION_SHOW, rpc.SessionRef(vm, name))
    if as_json:
        print_json(s)
        return
    dropped = s["log_start"]
    fields = [("name", s["name"]), ("vm", s["vm"]), ("state", _status(s)),
              ("command", _command(s)), ("cwd", s["cwd"]), ("tty", "yes" if s["tty"] else "no"),
              ("pid", s.get("pid") or "-"), ("started", _when(s.get("started"))),
              ("ended", _when(s.get("ended"))),
              ("output", f"{s['log_end']} bytes, {s['log_end'] - dropped} kept "
                         f"(cap {s['log_cap']}{f', {dropped} dropped' if dropped else ''})")]
    for key, value in fields:
        say(f"{key:8} {one_line(str(value), limit=1000)}")


def _write_events(call: Any) -> None:
    for event in call.events():
        if event.get("type") == "data":
            write_all(1, event["data"])


@session_group.command("logs")
@VM_ARG
@SESSION_ARG
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output until it exits.")
@click.option("--tail", "tail", type=click.IntRange(0, 1 << 24), help="Only the last N lines.")
def session_logs(vm: str, name: str, follow: bool, tail: int | None) -> None:
    """A session's output (what the guest kept of it; see --log-cap)."""
    call = session.client().start(rpc.SESSION_LOGS, rpc.SessionLogsParams(vm, name, follow, tail))
    try:
        _write_events(call)
    except KeyboardInterrupt:
        sys.exit(130)  # only this command ends; the session keeps running
    finally:
        call.close()


def _finish(result: dict[str, Any], what: str) -> None:
    say(f"{one_line(result['name'], limit=63)}: {what}, {_status(result)}")


@session_group.command("stop")
@VM_ARG
@SESSION_ARG
@click.option("--grace", type=click.FloatRange(0, 600), default=10.0, show_default=True,
              help="Seconds between SIGTERM and SIGKILL.")
def session_stop(vm: str, name: str, grace: float) -> None:
    """SIGTERM the session's processes; SIGKILL if they outlive the grace period."""
    _finish(session.call(rpc.SESSION_STOP, rpc.SessionStopParams(vm, name, grace)), "stopped")


@session_group.command("kill")
@VM_ARG
@SESSION_ARG
def session_kill(vm: str, name: str) -> None:
    """SIGKILL the session's processes (the signal is recorded)."""
    _finish(session.call(rpc.SESSION_KILL, rpc.SessionRef(vm, name)), "killed")


@session_group.command("rm")
@VM_ARG
@SESSION_ARG
@click.option("-f", "--force", is_flag=True, help="Kill it first if it is running.")
def session_rm(vm: str, name: str, force: bool) -> None:
    """Remove an exited session and its output."""
    _finish(session.call(rpc.SESSION_RM, rpc.SessionRmParams(vm, name, force)), "removed")


@session_group.command("send")
@VM_ARG
@SESSION_ARG
@click.argument("text", required=False)
@click.option("--file", "path", type=click.File("rb"), help="Send a file's bytes ('-': stdin).")
@click.option("-n", "--no-newline", is_flag=True, help="Do not add a newline after TEXT.")
@click.option("--eof", is_flag=True, help="Then close the session's input (^D on a PTY).")
def session_send(vm: str, name: str, text: str | None, path: Any, no_newline: bool,
                 eof: bool) -> None:
    """Write TEXT (plus a newline), a file or stdin to a running session's input."""
    if text is not None and path is not None:
        raise click.UsageError("give TEXT or --file, not both")
    if text is not None:
        data = text.encode() + (b"" if no_newline else b"\n")
    else:
        source: BinaryIO = sys.stdin.buffer if path is None else path
        data = source.read()
    call = session.client().start(rpc.SESSION_SEND, rpc.SessionSendParams(vm, name, eof=eof))
    try:
        with contextlib.suppress(OSError):  # a daemon that answered early: its error follows
            call.send_data(data)
            call.send({"type": "stdin_eof"})
        for _ in call.events():
            pass
    finally:
        call.close()


def _pump_keys(call: Any, detached: threading.Event, lock: threading.Lock) -> None:
    """stdin to the session until the detach key; EOF only stops typing."""
    while True:
        try:
            data = os.read(sys.stdin.fileno(), 65536)
        except OSError:
            data = b""
        if not data:
            return
        key = data.find(DETACH_KEY)
        if key >= 0:
            data = data[:key]
        if data:
            with lock, contextlib.suppress(OSError):
                call.send_data(data)
        if key >= 0:
            detached.set()
            import socket

            with contextlib.suppress(OSError):
                call.sock.shutdown(socket.SHUT_RDWR)  # ends the event loop below
            return


@session_group.command("attach")
@VM_ARG
@SESSION_ARG
@click.option("--read-only", is_flag=True, help="Watch only; never type into the session.")
@click.option("--lines", type=click.IntRange(0, 100000), default=20, show_default=True,
              help="Recent lines shown first.")
def session_attach(vm: str, name: str, read_only: bool, lines: int) -> None:
    """Live output and input of a session; Ctrl-] detaches (the session keeps running).

    One attach at a time types; the others are read-only.
    """
    import signal

    from banger.cli.terminal import raw_terminal, terminal_size
    from banger.errors import Unavailable

    show: dict[str, Any] = session.call(rpc.SESSION_SHOW, rpc.SessionRef(vm, name))
    rows, cols = terminal_size()
    params = rpc.SessionAttachParams(vm, name, write=not read_only, rows=rows, cols=cols,
                                     lines=lines)
    call = session.client().start(rpc.SESSION_ATTACH, params)
    detached, lock = threading.Event(), threading.Lock()
    raw = bool(show["tty"]) and sys.stdin.isatty() and not read_only

    def on_winch(_sig: int, _frame: Any) -> None:
        rows, cols = terminal_size()
        with lock, contextlib.suppress(OSError):
            call.send({"type": "resize", "rows": rows, "cols": cols})

    previous = signal.signal(signal.SIGWINCH, on_winch)
    try:
        with raw_terminal() if raw else contextlib.nullcontext():
            for event in call.events():
                if event.get("type") == "data":
                    write_all(1, event["data"])
                elif event.get("type") == "attached":
                    writer = bool(event.get("writer"))
                    note = (f"attached; {DETACH_NAME} detaches" if writer else
                            f"attached read-only (another attach is typing); {DETACH_NAME} "
                            "detaches")
                    click.echo(f"[{note}]" + ("\r" if raw else ""), err=True)
                    if writer or sys.stdin.isatty():
                        threading.Thread(target=_pump_keys, args=(call, detached, lock),
                                         daemon=True).start()
    except (Unavailable, KeyboardInterrupt):
        if not detached.is_set():
            raise
    finally:
        signal.signal(signal.SIGWINCH, previous)
        call.close()
    if detached.is_set() or call.result is None:
        click.echo(f"[detached from {one_line(name, 63)}; it keeps running]", err=True)
        return
    final = call.result["session"]
    click.echo(f"[{one_line(name, 63)} {_status(final)}]", err=True)
    code = final.get("exit_code")
    sys.exit(code if code is not None else 128 + int(final.get("signal") or 0))
