"""User-mode `--nat` without the host's loopback: QEMU runs in its own user+network namespace
and a per-VM slirp4netns (started with --disable-host-loopback) is that namespace's way out.

QEMU's own slirp maps the guest's gateway 10.0.2.2 to 127.0.0.1 of QEMU's namespace, where
nothing listens; slirp4netns refuses the host's loopback. Host forwards go through slirp4netns's
API (host address:port -> the namespace) and on through QEMU's hostfwd (namespace -> guest).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import signal
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec

from banger.errors import OperationFailed, Unavailable
from banger.logfiles import tail_line
from banger.runner import arun, which
from banger.textsafe import one_line
from banger.vmm.process import kill_pid, wait_gone

log = logging.getLogger("banger.vmm.qemu.slirp")
SLIRP4NETNS = "slirp4netns"
# QEMU in a new user namespace as its root (mapped to us): enough to own the network namespace.
UNSHARE = ["unshare", "--user", "--map-root-user", "--net", "--mount", "--"]
# QEMU's slirp forwards guest DNS to /etc/resolv.conf's server; a host loopback resolver
# (127.0.0.53) is not in QEMU's namespace, so it gets slirp4netns's resolver instead.
NS_RESOLVER = "10.0.2.3"
# QEMU keeps no capability in its namespace, so its forwards of low guest ports (ssh's 22)
# need the namespace's unprivileged port range opened first.
_LOW_PORTS = "echo 0 > /proc/sys/net/ipv4/ip_unprivileged_port_start"
_BIND_RESOLV = f'{_LOW_PORTS} && mount --bind "$1" /etc/resolv.conf || exit 1; shift; exec "$@"'
# Egress VMs: the firewall is loaded before QEMU exists, so the namespace is never open, and
# QEMU keeps no capability there (a slirp bug must not be able to flush the firewall).
_FIREWALL_FIRST = (f'"$1" link set lo up && "$2" -f "$3" && {_LOW_PORTS} && '
                   'mount --bind "$4" /etc/resolv.conf || exit 1; shift 4; exec "$@"')
NO_CAPS = ["--no-new-privs", "--bounding-set=-all", "--inh-caps=-all",
           "--securebits=+noroot,+noroot_locked,+no_setuid_fixup,+no_setuid_fixup_locked", "--"]
EGRESS_RESOLVER = "127.0.0.1"  # the daemon's resolver, inside the namespace
NS_TAP = "tap0"
READY_TIMEOUT = 5.0
API_TIMEOUT = 5.0
MAX_REPLY = 1 << 16
RUNTIME_FILES = ("slirp.sock", "slirp4netns.pid")  # in the VM's dir, while it runs


Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]


class ApiError(msgspec.Struct):
    desc: Annotated[str, msgspec.Meta(max_length=4096)] = ""


class HostFwd(msgspec.Struct):
    proto: Annotated[str, msgspec.Meta(max_length=8)]
    host_addr: Annotated[str, msgspec.Meta(max_length=64)]
    host_port: Port


class ForwardList(msgspec.Struct):
    """list_hostfwd's answer (unlike add_hostfwd's, not wrapped in "return")."""

    entries: Annotated[list[HostFwd], msgspec.Meta(max_length=4096)] = []
    error: ApiError | None = None


class AddReply(msgspec.Struct, rename={"result": "return"}):
    result: msgspec.Raw = msgspec.Raw(b"")  # empty when missing (Raw cannot be optional)
    error: ApiError | None = None


R = TypeVar("R", ForwardList, AddReply)


def require() -> str:
    """The slirp4netns binary, or a one-line error saying how to get it."""
    path = which(SLIRP4NETNS)
    if path is None:
        raise Unavailable("--nat in user mode needs slirp4netns (it keeps guests off the host's "
                          "loopback); install it: apt-get install slirp4netns")
    return path


def resolv_conf(vm_dir: Path) -> Path:
    return vm_dir / "resolv.conf"


def write_resolv_conf(vm_dir: Path, firewall: str = "") -> None:
    resolv_conf(vm_dir).write_text(f"nameserver {EGRESS_RESOLVER if firewall else NS_RESOLVER}\n")


def namespace_argv(vm_dir: Path, firewall: str = "") -> list[str]:
    """The prefix that starts QEMU in its own namespaces, resolving through slirp4netns
    (write_resolv_conf first); with a firewall (an nft file), behind it from the start."""
    setpriv = which("setpriv")
    drop = [setpriv, *NO_CAPS] if setpriv else []
    if not firewall:
        return [*UNSHARE, "sh", "-c", _BIND_RESOLV, "sh", str(resolv_conf(vm_dir)), *drop]
    ip, nft = which("ip"), which("nft")
    if ip is None or nft is None or not drop:
        raise Unavailable("--allow needs iproute2, nftables and setpriv: apt-get install "
                          "iproute2 nftables util-linux")
    return [*UNSHARE, "sh", "-c", _FIREWALL_FIRST, "sh", ip, nft, firewall,
            str(resolv_conf(vm_dir)), *drop]


def api_socket(vm_dir: Path) -> Path:
    return vm_dir / RUNTIME_FILES[0]


def pidfile(vm_dir: Path) -> Path:
    return vm_dir / RUNTIME_FILES[1]


async def start(vm_dir: Path, qemu_pid: int, exit_fd: int) -> int:
    """Attach a slirp4netns to QEMU's namespace; returns its pid once the namespace is up.

    exit_fd is the read end of a pipe whose only writer is QEMU: slirp4netns exits with it,
    even while the daemon is down."""
    binary = require()
    api_socket(vm_dir).unlink(missing_ok=True)
    ready_r, ready_w = os.pipe()
    argv = [binary, "--configure", "--disable-host-loopback", "--mtu", "65520",
            "--exit-fd", str(exit_fd), "--ready-fd", str(ready_w),
            "--api-socket", str(api_socket(vm_dir)), str(qemu_pid), NS_TAP]
    logfile = vm_dir / "slirp4netns.log"
    try:
        # Started in the background of a shell that exits: it outlives the daemon like QEMU
        # does, and is never the daemon's zombie.
        res = await arun(["sh", "-c", 'log=$1; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!',
                          "sh", logfile, *argv], pass_fds=(exit_fd, ready_w), what="slirp4netns",
                         timeout=10)
    finally:
        os.close(ready_w)
    try:
        pid = int(res.stdout.strip())
        ready = await asyncio.to_thread(_wait_ready, ready_r, READY_TIMEOUT)
    finally:
        os.close(ready_r)
    if not ready:
        await stop(vm_dir, pid)
        tail = _log_tail(logfile)
        hint = ("; /dev/net/tun must be usable by you (Debian's default: chmod 0666 "
                "/dev/net/tun)" if "/dev/net/tun" in tail else "")
        raise OperationFailed(f"slirp4netns did not set up the VM's network: {tail}{hint}")
    pidfile(vm_dir).write_text(f"{pid}\n")
    return pid


def _wait_ready(fd: int, timeout: float) -> bool:
    readable, _, _ = select.select([fd], [], [], timeout)
    return bool(readable) and os.read(fd, 1) == b"1"


def _log_tail(logfile: Path) -> str:
    return tail_line(logfile, 2) or "no log"


async def stop(vm_dir: Path, pid: int) -> None:
    """End the VM's slirp4netns (guarded by its API socket path against pid reuse)."""
    marker = str(api_socket(vm_dir))
    kill_pid(pid, marker, signal.SIGTERM)
    if not await wait_gone(pid, marker, 2.0):
        kill_pid(pid, marker)
        await wait_gone(pid, marker, 2.0)
    for name in RUNTIME_FILES:
        (vm_dir / name).unlink(missing_ok=True)


async def add_forward(vm_dir: Path, host: str, host_port: int, ns_port: int) -> None:
    """host:host_port on the host reaches ns_port in QEMU's namespace."""
    reply = await _call(vm_dir, "add_hostfwd", {"proto": "tcp", "host_addr": host,
                                                 "host_port": host_port, "guest_port": ns_port},
                        AddReply)
    if reply.error is not None or not reply.result:
        desc = one_line(reply.error.desc if reply.error else "no result")
        raise OperationFailed(f"slirp4netns refused forward {host}:{host_port}: {desc}")


async def forwards(vm_dir: Path) -> set[tuple[str, int]]:
    """The (host address, port) pairs slirp4netns already listens on."""
    listed = await _call(vm_dir, "list_hostfwd", {}, ForwardList)
    if listed.error is not None:
        raise OperationFailed(f"slirp4netns refused list_hostfwd: {one_line(listed.error.desc)}")
    return {(fwd.host_addr, fwd.host_port) for fwd in listed.entries if fwd.proto == "tcp"}


async def _call(vm_dir: Path, execute: str, arguments: dict[str, Any], reply: type[R]) -> R:
    request = msgspec.json.encode({"execute": execute, "arguments": arguments})
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(str(api_socket(vm_dir))), API_TIMEOUT)
        try:
            writer.write(request)
            writer.write_eof()
            data = await asyncio.wait_for(reader.read(MAX_REPLY), API_TIMEOUT)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        return msgspec.json.decode(data, type=reply)
    except (OSError, TimeoutError, msgspec.DecodeError) as exc:  # ValidationError is one
        raise OperationFailed(f"the VM's slirp4netns did not answer {execute}: {exc}; "
                              "restart the VM") from exc
