"""`banger vm ssh`, `vm ssh-proxy`, `vm ports`, `vm forward` and `banger ssh-config`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from banger.cli import session
from banger.cli.output import print_json, print_table, say
from banger.cli.params import DashDashCommand
from banger.cli.vm_cmds import VM_ARG
from banger.rpc.methods import VmRef
from banger.rpc.methods import vm as rpc


def ssh_argv(info: dict[str, Any], command: list[str]) -> list[str]:
    from banger.ssh.keys import ssh_options

    opts = ssh_options(Path(info["key"]), Path(info["known_hosts"]).parent.parent, info["name"])
    argv = ["ssh", *opts, "-p", str(info["port"]), f"{info['user']}@{info['host']}"]
    if command:
        argv += ["--", *command]
    # In tap mode with a netns the VM is only reachable from inside that namespace.
    return ["ip", "netns", "exec", info["netns"], *argv] if info["netns"] else argv


@click.command("ssh", cls=DashDashCommand)
@VM_ARG
@click.pass_context
def vm_ssh(ctx: click.Context, vm: str) -> None:
    """ssh into a running VM with banger's key: banger vm ssh VM [-- CMD...]"""
    info = session.call(rpc.VM_SSH_INFO, VmRef(vm))
    argv = ssh_argv(info, ctx.meta["guest_command"])
    sys.stdout.flush()
    try:
        os.execvp(argv[0], argv)  # ssh owns the terminal from here
    except FileNotFoundError:
        raise click.ClickException(f"{argv[0]} is not installed; install openssh-client") from None


@click.command("ssh-proxy")
@click.argument("host")
@click.option("--connect", metavar="HOST:PORT", hidden=True,
              help="Skip the daemon: pump to this address (used inside a netns).")
def vm_ssh_proxy(host: str, connect: str | None) -> None:
    """ssh's ProxyCommand: connect stdin/stdout to the VM's sshd (HOST is NAME[.vm])."""
    from banger.ssh import proxy

    if connect is None:
        info = session.call(rpc.VM_SSH_INFO, VmRef(proxy.vm_name(host)))
        if info["netns"]:
            # Only a process inside the namespace reaches the VM: re-run there, past the daemon.
            argv = ["ip", "netns", "exec", info["netns"], *banger_command(), "vm", "ssh-proxy",
                    host, "--connect", f"{info['host']}:{info['port']}"]
            os.execvp(argv[0], argv)
        address, port = info["host"], int(info["port"])
    else:
        address, _, port_text = connect.rpartition(":")
        port = int(port_text)
    try:
        sock = proxy.connect(address, port)
    except OSError as exc:
        raise click.ClickException(f"cannot reach sshd of {host} at {address}:{port}: "
                                   f"{exc.strerror or exc}") from None
    proxy.pump(sock)


def banger_command() -> list[str]:
    """How to run this CLI again from ssh or a netns: the entry script, else `python -m banger`."""
    script = Path(sys.argv[0])
    if script.name == "banger" and script.is_file() and os.access(script, os.X_OK):
        return [str(script.resolve())]
    return [sys.executable, "-P", "-m", "banger"]  # -P: the caller's directory is not imported


@click.command("ports")
@click.argument("vms", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def vm_ports(vms: tuple[str, ...], as_json: bool) -> None:
    """List the listening ports of running VMs and where the host reaches them."""
    rows: list[dict[str, Any]] = session.call(rpc.VM_PORTS, rpc.PortsParams(list(vms)))
    if as_json:
        print_json(rows)
        return
    print_table(["VM", "PROTO", "ADDRESS", "PORT", "PROCESS", "ENDPOINT", "HTTP"],
                [[r["vm"], r["proto"], r["address"], r["port"], r["process"] or "-",
                  r["endpoint"] or "-", "yes" if r["http"] else "-"] for r in rows],
                empty="no listening ports")


@click.command("forward")
@VM_ARG
@click.argument("mapping", metavar="HOSTPORT:GUESTPORT")
def vm_forward(vm: str, mapping: str) -> None:
    """Publish a guest port on 127.0.0.1:HOSTPORT (kept across restarts)."""
    res = session.call(rpc.VM_FORWARD, rpc.ForwardParams(vm, mapping))
    say(f"{res['vm']}: 127.0.0.1:{mapping.split(':')[0]} -> guest port {res['guest_port']}")


@click.command("ssh-config")
@click.option("--install", is_flag=True, help="Include the block from ~/.ssh/config.")
@click.option("--uninstall", is_flag=True, help="Remove the Include and the block file.")
def ssh_config(install: bool, uninstall: bool) -> None:
    """Print (or install) a `Host *.vm` block so plain `ssh NAME.vm` works."""
    from banger.config import load_config
    from banger.paths import resolve_paths
    from banger.ssh import config as sshcfg
    from banger.ssh.keys import ensure_key, known_hosts

    if install and uninstall:
        raise click.UsageError("give --install or --uninstall, not both")
    paths = resolve_paths()
    cfg = load_config(paths)
    user_config = Path.home() / ".ssh" / "config"
    include_file = paths.config_dir / "ssh_config"
    if uninstall:
        changed = sshcfg.uninstall(user_config, include_file)
        click.echo(f"removed the banger Include from {user_config}" if changed else "not installed")
        return
    ensure_key(cfg.ssh_key)
    block = sshcfg.host_block(cfg.ssh_key, known_hosts(paths.state_dir), banger_command())
    if not install:
        click.echo(block, nl=False)
        return
    changed = sshcfg.install(user_config, include_file, block)
    click.echo(f"{user_config} includes {include_file}" + ("" if changed else " (already)"))
