"""`banger doctor`."""

from __future__ import annotations

from dataclasses import asdict

import click

from banger.cli import session
from banger.cli.output import print_json


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def doctor(as_json: bool) -> None:
    """Check the host and banger's state; every WARN and FAIL says how to fix it."""
    from banger.doctor import run_checks

    checks = run_checks(session.paths())
    if as_json:
        print_json([asdict(c) for c in checks])
    else:
        _render(checks)
    if any(c.status == "FAIL" for c in checks):
        raise SystemExit(1)


def _render(checks: list) -> None:  # type: ignore[type-arg]
    from rich.table import Table
    from rich.text import Text

    from banger.cli.output import cell, print_renderable

    colours = {"PASS": "green", "WARN": "yellow", "FAIL": "red"}
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("STATUS", "CHECK", "DETAIL", "FIX"):
        table.add_column(col, overflow="fold")
    for c in checks:  # details quote host tools and files: literal text, never markup
        table.add_row(Text(c.status, style=colours[c.status]), cell(c.name), cell(c.detail),
                      cell(c.fix))
    print_renderable(table)
