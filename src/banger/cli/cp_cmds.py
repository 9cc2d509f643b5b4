"""`banger vm cp SRC DST`: a file or directory tree into a guest or out of it, like `docker cp`."""

from __future__ import annotations

import sys

import click

from banger.cli import session
from banger.textsafe import one_line


@click.command("cp")
@click.argument("src")
@click.argument("dst")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
def vm_cp(src: str, dst: str, quiet: bool) -> None:
    """Copy SRC to DST; exactly one of them is VM:/path (a host path with a colon: ./a:b).

    Into an existing directory the copy keeps its name, else it is named DST. Modes are kept
    and symlinks copied as symlinks; out of a guest, everything goes through banger's safe
    extractor (nothing outside DST, no device files, no links leaving the copy).
    """
    from banger.rpc.methods.vm import VM_CP, CpParams
    from banger.transfer.spec import plan

    p = plan(src, dst)
    params = CpParams(p.vm, p.src, p.dst, p.to_guest)
    # Progress (bytes/total) only on a terminal: a pipe or log gets the result line alone.
    session.call_with_progress(VM_CP, params, quiet=quiet or not sys.stderr.isatty())
    if not quiet:
        where = f"{p.vm}:{p.dst}" if p.to_guest else p.dst
        click.echo(f"copied {one_line(src, 200)} -> {one_line(where, 200)}", err=True)
