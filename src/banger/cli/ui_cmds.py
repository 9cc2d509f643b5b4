"""`banger ui [--url]`: the web UI's one-time login URL, opened in a browser when there is one."""

from __future__ import annotations

import os

import click

from banger.cli import session
from banger.cli.output import say
from banger.rpc.methods import NoParams
from banger.rpc.methods import ui as rpc
from banger.textsafe import one_line


@click.command()
@click.option("--url", "url_only", is_flag=True, help="Print only the login URL; open no browser.")
def ui(url_only: bool) -> None:
    """Open the web UI (served by the daemon on loopback) with a one-time login link."""
    result = session.call(rpc.UI_OPEN, NoParams())
    url = one_line(str(result["url"]), 500)
    if url_only:
        click.echo(url)
        return
    say(f"banger UI: {url}")
    say(f"(the link logs one browser in, once, within {int(result['token_ttl_s'])}s; "
        "`banger ui` makes a new one)", err=True)
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        import webbrowser

        webbrowser.open(url)
