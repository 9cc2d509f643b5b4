"""`banger`: the root command, error handling and exit codes."""

from __future__ import annotations

import sys

import click

from banger.cli.lazy import LazyGroup
from banger.cli.output import error
from banger.errors import BangerError

SUBCOMMANDS = {
    "agent": "banger.cli.agent_cmds:agent",
    "daemon": "banger.cli.daemon_cmds:daemon",
    "doctor": "banger.cli.doctor_cmd:doctor",
    "vm": "banger.cli.vm_cmds:vm",
    "ps": "banger.cli.vm_cmds:vm_list",
    "completion": "banger.cli.completion:completion",
    "image": "banger.cli.image_cmds:image",
    "kernel": "banger.cli.kernel_cmds:kernel",
    "mcp": "banger.cli.mcp_cmds:mcp",
    "ssh-config": "banger.cli.net_cmds:ssh_config",
    "system": "banger.cli.system_cmds:system",
    "ui": "banger.cli.ui_cmds:ui",
}


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from banger.buildinfo import build_info

    click.echo(build_info().one_line())
    ctx.exit()


@click.group(cls=LazyGroup, lazy=SUBCOMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Print version, commit and build time.")
def cli() -> None:
    """One-command development sandboxes on microVMs."""


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def version(as_json: bool) -> None:
    """Print version, git commit and build time."""
    from dataclasses import asdict

    from banger.buildinfo import build_info

    info = build_info()
    if as_json:
        from banger.cli.output import print_json

        print_json(asdict(info))
    else:
        click.echo(info.one_line())


def main() -> None:
    try:
        cli.main(prog_name="banger", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "banger"
        error(f"{exc.format_message()} (see `{where} --help`)")
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except BangerError as exc:
        error(str(exc))
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        sys.exit(1)
