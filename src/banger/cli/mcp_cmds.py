"""`banger mcp`: serve banger's tools to an AI agent over MCP (stdio, or HTTP on loopback)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("mcp")
@click.option("--http", "listen", metavar="ADDR:PORT",
              help="Serve streamable HTTP on this loopback address (e.g. 127.0.0.1:8765) "
                   "instead of stdio; clients send `Authorization: Bearer TOKEN`.")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
              help="The bearer token's file (default: mcp-token in the runtime dir; made 0600 "
                   "with a new token, printed once, when absent).")
@click.option("--new-token", is_flag=True,
              help="With --http: replace the token with a new one (printed) at this start.")
def mcp(listen: str | None, token_file: Path | None, new_token: bool) -> None:
    """Serve VMs, exec, files, workspaces and sessions as MCP tools (docs/mcp.md).

    Without --http it speaks MCP on stdin/stdout: an MCP host starts `banger mcp` itself.
    """
    from banger.cli import session

    if listen is None:
        if token_file is not None or new_token:
            raise click.UsageError("--token-file and --new-token go with --http")
        from banger.mcp.server import run_stdio

        run_stdio()
        return
    from banger.mcp.http import serve

    paths = session.paths()
    if token_file is None:
        from banger.paths import ensure_private_dir

        ensure_private_dir(paths.runtime_dir)
        token_file = paths.runtime_dir / "mcp-token"
    serve(listen, token_file, renew=new_token)
