"""Host forwards into a QEMU guest: QEMU's own hostfwd rules, or for an isolated VM (--nat)
slirp4netns's forward on the host plus a QEMU hostfwd inside QEMU's namespace."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

from banger.errors import Unavailable
from banger.textsafe import one_line
from banger.vmm.base import HostForward, NetworkAttachment
from banger.vmm.qemu import slirp

# An isolated VM's guest ports QEMU already forwards inside its namespace (one rule each).
NS_PORTS = "ns_ports.json"
Qmp = Callable[..., Awaitable[object]]


def rule(fwd: HostForward) -> str:
    return f"tcp:{fwd.host}:{fwd.host_port}-:{fwd.guest_port}"


def ns_rule(guest_port: int) -> str:
    """Inside its own namespace QEMU binds the guest's port number on every address."""
    return f"tcp::{guest_port}-:{guest_port}"


def launch_rules(net: NetworkAttachment) -> list[str]:
    """The hostfwd rules of QEMU's command line."""
    if net.isolated:
        return [ns_rule(port) for port in sorted({fwd.guest_port for fwd in net.hostfwds})]
    return [rule(fwd) for fwd in net.hostfwds]


def record_ns_ports(vm_dir: Path, net: NetworkAttachment | None) -> None:
    if net is not None and net.isolated:
        _save_ns_ports(vm_dir, {fwd.guest_port for fwd in net.hostfwds})


def _ns_ports(vm_dir: Path) -> set[int]:
    try:
        ports = json.loads((vm_dir / NS_PORTS).read_text())
    except (OSError, ValueError):
        return set()
    return {port for port in ports if isinstance(port, int)} if isinstance(ports, list) else set()


def _save_ns_ports(vm_dir: Path, ports: set[int]) -> None:
    tmp = vm_dir / f"{NS_PORTS}.tmp"
    tmp.write_text(json.dumps(sorted(ports)))
    tmp.replace(vm_dir / NS_PORTS)


async def hostfwd_add(qmp: Qmp, hostfwd: str) -> None:
    answer = await qmp("human-monitor-command", **{"command-line": f"hostfwd_add net0 {hostfwd}"})
    if isinstance(answer, str) and answer.strip():
        raise Unavailable(f"QEMU refused forward {hostfwd}: {one_line(answer)}")


async def add(qmp: Qmp, vm_dir: Path, fwd: HostForward, isolated: bool) -> None:
    """One more forward on a running VM (QEMU's, or slirp4netns's + QEMU's)."""
    if not isolated:
        await hostfwd_add(qmp, rule(fwd))
        return
    inner = _ns_ports(vm_dir)
    if fwd.guest_port not in inner:
        await hostfwd_add(qmp, ns_rule(fwd.guest_port))
        _save_ns_ports(vm_dir, inner | {fwd.guest_port})
    await slirp.add_forward(vm_dir, fwd.host, fwd.host_port, fwd.guest_port)


async def restore(vm_dir: Path, fwds: tuple[HostForward, ...], isolated: bool) -> None:
    """QEMU's own forwards live as long as QEMU; slirp4netns's are renewed where missing."""
    if not isolated:
        return
    present = await slirp.forwards(vm_dir)
    for fwd in fwds:
        if (fwd.host, fwd.host_port) not in present:
            await slirp.add_forward(vm_dir, fwd.host, fwd.host_port, fwd.guest_port)
