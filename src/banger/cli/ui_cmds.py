"""`banger ui [--url]`: the web UI's one-time login URL, opened in a browser when there is one."""

from __future__ import annotations

import html
import os
from pathlib import Path

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

        # The browser gets a private file, not the URL: argv is world-readable in /proc.
        webbrowser.open(login_page(url).as_uri())


def login_page(url: str) -> Path:
    """A page only this user can read (0600 in the 0700 runtime dir) that goes to url."""
    page = session.paths().runtime_dir / "ui-login.html"
    fd = os.open(page, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f'<!doctype html><meta http-equiv="refresh" content="0;url={html.escape(url)}">'
                f'<a href="{html.escape(url)}">banger UI</a>\n')
    return page
