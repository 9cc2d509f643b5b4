"""Rendering: JSON for scripts, tables for people, one-line errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.console import Console


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
        table.add_row(*("" if c is None else str(c) for c in row))
    print_renderable(table)


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


def error(message: str) -> None:
    click.echo(f"error: {message}", err=True)


def warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def is_tty() -> bool:
    return sys.stdout.isatty()
