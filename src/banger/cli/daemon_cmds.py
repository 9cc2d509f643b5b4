"""`banger daemon status|start|stop|logs|ops`."""

from __future__ import annotations

import time

import click

from banger.cli import session
from banger.cli.output import print_json, print_table, say
from banger.cli.params import TIMEOUT, WholeNumber
from banger.errors import Unavailable
from banger.rpc.methods import NoParams
from banger.rpc.methods import system as rpc
from banger.textsafe import one_line


@click.group()
def daemon() -> None:
    """Manage the banger daemon (it also starts by itself on first use)."""


@daemon.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(as_json: bool) -> None:
    """Show whether the daemon runs, its pid, version and uptime."""
    try:
        st = session.client(autostart=False).call(rpc.DAEMON_STATUS, NoParams())
    except Unavailable:
        if as_json:
            print_json({"running": False})
        else:
            click.echo("daemon: not running (it starts on first use, or `banger daemon start`)")
        return
    if as_json:
        print_json({"running": True, **st})
        return
    print_table(["RUNNING", "PID", "VERSION", "UPTIME", "SOCKET"],
                [["yes", st["pid"], st["version"], f"{st['uptime_s']}s", st["socket"]]])


@daemon.command()
def start() -> None:
    """Start the daemon if it is not running."""
    st = session.call(rpc.DAEMON_STATUS, NoParams())
    say(f"daemon running (pid {st['pid']})")


@daemon.command()
@click.option("--timeout", type=TIMEOUT, default=30.0, show_default=True,
              help="Seconds to wait for exit.")
def stop(timeout: float) -> None:
    """Stop the daemon (VMs keep running and are re-adopted on the next start)."""
    client = session.client(autostart=False)
    try:
        reply = client.call(rpc.DAEMON_SHUTDOWN, NoParams())
    except Unavailable:
        click.echo("daemon: not running")
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not session.paths().socket.exists():
            click.echo(f"daemon stopped (pid {reply['pid']})")
            return
        time.sleep(0.05)
    raise Unavailable(f"daemon (pid {reply['pid']}) did not stop within {timeout:.0f}s")


@daemon.command()
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option("-n", "--lines", type=WholeNumber("line count", 0, 100_000), default=50,
              show_default=True, help="Lines to show.")
def logs(follow: bool, lines: int) -> None:
    """Print the daemon's log (guest text in it is shown without terminal controls)."""
    from banger.logfiles import Follower, tail_bytes

    path = session.paths().daemon_log
    if not path.exists():
        say(f"no daemon log yet at {path}")
        return
    size = path.stat().st_size
    tail = tail_bytes(path, min(max(lines * 400, 65536), 8 << 20)).decode(errors="replace")
    for line in tail.splitlines(keepends=True)[-lines:] if lines > 0 else []:
        say(line.rstrip("\n"))
    follower, partial = Follower(path, offset=size), b""
    while follow:
        data = follower.read()
        if not data:
            time.sleep(0.2)
            continue
        *complete, partial = (partial + data).split(b"\n")  # a line half-written waits
        for raw in complete:
            say(raw.decode(errors="replace"))


def _duration(started: str, ended: str | None) -> str:
    from datetime import datetime

    if ended is None:
        return "-"
    seconds = (datetime.fromisoformat(ended) - datetime.fromisoformat(started)).total_seconds()
    return f"{seconds:.1f}s" if seconds < 120 else f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


@daemon.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("-n", "--limit", type=WholeNumber("limit", 1, rpc.MAX_OPERATIONS), default=20,
              show_default=True, help="Operations to show, newest first.")
def ops(as_json: bool, limit: int) -> None:
    """Recent long operations (create, start, pulls, ...): state, duration and error."""
    rows = session.call(rpc.DAEMON_OPERATIONS, rpc.OperationsParams(limit))
    if as_json:
        print_json(rows)
        return
    print_table(["ID", "METHOD", "STATE", "STARTED", "DURATION", "ERROR"],
                [[r["id"], r["method"], r["state"], r["started_at"],
                  _duration(r["started_at"], r["ended_at"]), one_line(r["error"] or "", 200)]
                 for r in rows],
                empty="no operations yet")
