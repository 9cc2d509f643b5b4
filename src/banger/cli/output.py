"""Rendering: JSON for scripts, tables for people, one-line errors.

The choke point for banger's own output: strings that came from the daemon may hold guest or
image text, so tables show them as literal rich Text (never markup) and lines pass through
banger.textsafe. A guest command's own output (`vm exec`) does not come through here.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from banger.textsafe import clean, one_line

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

ERROR_LIMIT = 2000  # a boot error carries console lines; longer is noise


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=False))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, empty: str = "") -> None:
    if not rows and empty:
        click.echo(empty)
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for h in headers:
        table.add_column(h)
    for row in rows:
        table.add_row(*(cell(c) for c in row))
    print_renderable(table)


def cell(value: Any) -> Text:
    """A table cell: one clean line shown as is (a guest's `[red]` or `[/]` is not markup; a
    tab or newline would break the table's layout)."""
    from rich.text import Text

    if isinstance(value, Text):
        return value
    return Text(one_line("" if value is None else str(value), limit=1000))


def console() -> Console:
    """A rich console; when piped, wide enough that rows don't wrap."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 250)


def print_renderable(renderable: object) -> None:
    """Print a rich renderable without the trailing padding rich adds to every line."""
    out = console()
    with out.capture() as captured:
        out.print(renderable)
    click.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))


def print_catalog(rows: list[dict[str, Any]], as_json: bool) -> None:
    """The image and kernel catalogs share one shape: name, kind, state, description."""
    if as_json:
        print_json(rows)
        return
    print_table(["NAME", "KIND", "STATE", "DESCRIPTION"],
                [[r["name"] + (" (default)" if r["default"] else ""), r["kind"], r["state"],
                  r["description"]] for r in rows])


def say(text: str, *, err: bool = False) -> None:
    """A line of banger's own output that holds daemon-provided text."""
    click.echo(clean(text), err=err)


def error(message: str) -> None:
    click.echo(f"error: {one_line(message, ERROR_LIMIT)}", err=True)


def warn(message: str) -> None:
    click.echo(f"warning: {one_line(message, ERROR_LIMIT)}", err=True)


def is_tty() -> bool:
    return sys.stdout.isatty()
