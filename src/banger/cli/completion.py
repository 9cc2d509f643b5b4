"""`banger completion SHELL`: print the shell completion script."""

from __future__ import annotations

import click


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print a completion script, e.g. `banger completion bash >> ~/.bashrc`."""
    from click.shell_completion import get_completion_class

    from banger.cli.main import cli

    cls = get_completion_class(shell)
    assert cls is not None
    click.echo(cls(cli, {}, "banger", "_BANGER_COMPLETE").source())
