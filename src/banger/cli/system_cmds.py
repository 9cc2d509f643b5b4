"""`banger system install | uninstall | status`: banger's root helper for tap networking."""

from __future__ import annotations

import os
from pathlib import Path

import click

from banger.cli.output import print_json, say
from banger.errors import Unavailable

ROOT_OPTION = click.option("--root", "root", type=click.Path(file_okay=False, path_type=Path),
                           default=Path("/"), hidden=True,
                           help="Write under this directory instead of / (packaging, tests).")


def _require_root(command: str) -> None:
    if os.geteuid() != 0:
        raise Unavailable(f"`banger system {command}` changes the host: run it with sudo "
                          f"(sudo banger system {command})")


@click.group()
def system() -> None:
    """The root helper (bangerd-root): the only privileged part, for --net tap."""


@system.command()
@ROOT_OPTION
def install(root: Path) -> None:
    """Create the banger group (adding you), write /etc/banger/root.toml, start the helper and
    the .vm DNS for every user, and wire .vm into the host's resolver."""
    _require_root("install")
    from banger.roothelper.install import Installer
    from banger.roothelper.layout import Layout

    for line in Installer(Layout(root), os.environ.get("SUDO_USER")).install():
        say(line)


@system.command()
@ROOT_OPTION
def uninstall(root: Path) -> None:
    """Remove what `system install` added (the group only if install created it)."""
    _require_root("uninstall")
    from banger.roothelper.install import uninstall as remove
    from banger.roothelper.layout import Layout

    for line in remove(Layout(root)):
        say(line)


@system.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@ROOT_OPTION
def status(as_json: bool, root: Path) -> None:
    """Whether the helper is installed, answers, whether you may use it, and `.vm` DNS."""
    import msgspec

    from banger.roothelper.install import status as helper_status
    from banger.roothelper.layout import Layout

    st = helper_status(Layout(root))
    if as_json:
        print_json(msgspec.to_builtins(st))
        return
    installed = (f"installed ({st.config}{', systemd units' if st.systemd_units else ''})"
                 if st.installed else "not installed: run `sudo banger system install`")
    reachable = (f"answers on {st.socket}: bridge {st.bridge} {st.cidr}" if st.reachable
                 else f"not reachable: {st.problem}")
    you = (f"you may use it (root or in group {st.group})" if st.member
           else f"you are not in group {st.group}: `sudo banger system install` adds you; "
                "then log in again")
    tun = st.tun or "/dev/net/tun usable by VMMs"
    for label, text in (("helper", installed), ("socket", reachable), ("access", you),
                        ("tun", tun), ("dns", st.dns.service), ("zones", st.dns.zone_dir),
                        ("resolver", st.dns.resolver)):
        click.echo(f"{label:<9}{text}")
