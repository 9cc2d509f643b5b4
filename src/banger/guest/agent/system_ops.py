"""Guest agent operations on the machine itself: health, info, configure, ports, poweroff.

Stdlib-only, Python >= 3.7; rarely used modules are imported on first use (TCG is slow).
"""

from __future__ import annotations

import os
import sys
import time

from . import protocol as proto
from .core import (
    AGENT_VERSION,
    LINUX_REBOOT_CMD_POWER_OFF,
    Agent,
    AgentError,
    log,
    read_text,
    run_tool,
    write_file_atomic,
)
from .network import (
    configure_network,
)
from .session import Channel

TYPE_CHECKING = False  # mypy treats this name as true; the guest never imports typing
if TYPE_CHECKING:
    from typing import Any


def op_health(channel: Channel, params: dict[str, Any]) -> dict[str, Any]:
    agent = channel.session.agent
    return {
        "ok": True,
        "version": AGENT_VERSION,
        "protocol": proto.PROTOCOL_VERSION,
        "uptime": round(time.monotonic() - agent.started, 3),
        "pid1": agent.pid1,
    }


def op_info(channel: Channel, params: dict[str, Any]) -> dict[str, Any]:
    uname = os.uname()
    return {
        "hostname": uname.nodename,
        "kernel": uname.release,
        "arch": uname.machine,
        "os_release": read_os_release(),
        "cpus": os.cpu_count(),
        "memory": read_meminfo(),
        "python": ".".join(str(part) for part in sys.version_info[:3]),
        "systemd": systemd_is_pid1(),
        "agent_pid1": channel.session.agent.pid1,
        "boot_uptime": read_boot_uptime(),
    }


def read_os_release() -> dict[str, str]:
    fields = {}
    text = read_text("/etc/os-release") or read_text("/usr/lib/os-release")
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            fields[key.strip()] = value.strip().strip("\"'")
    return fields


def read_meminfo() -> dict[str, int]:
    wanted = {"MemTotal": "total", "MemAvailable": "available"}
    memory = {}
    for line in read_text("/proc/meminfo").splitlines():
        key, _, rest = line.partition(":")
        if key in wanted and rest.split():
            memory[wanted[key]] = int(rest.split()[0]) * 1024
    return memory


def read_boot_uptime() -> float | None:
    text = read_text("/proc/uptime").split()
    return float(text[0]) if text else None


def systemd_is_pid1() -> bool:
    return read_text("/proc/1/comm").strip() == "systemd"


def op_configure(channel: Channel, params: dict[str, Any]) -> dict[str, Any]:
    agent = channel.session.agent
    done = []
    if params.get("hostname") is not None:
        set_hostname(agent, require_hostname(params["hostname"]))
        done.append("hostname")
    if params.get("authorized_keys") is not None:
        keys = params["authorized_keys"]
        write_authorized_keys(agent, [keys] if isinstance(keys, str) else list(keys))
        done.append("authorized_keys")
    if params.get("clock") is not None:
        set_clock(agent, float(params["clock"]))
        done.append("clock")
    if params.get("machine_id") is not None:
        set_machine_id(agent, str(params["machine_id"]))
        done.append("machine_id")
    if params.get("entropy") is not None:
        add_entropy(agent, str(params["entropy"]))
        done.append("entropy")
    if params.get("network") is not None:
        configure_network(agent, params["network"])
        done.append("network")
    if params.get("ssh_host_key") is not None:
        set_ssh_host_key(agent, params["ssh_host_key"])
        done.append("ssh_host_key")
    if params.get("identity_ready"):
        mark_identity_ready(agent)
        done.append("identity_ready")
    if params.get("git_identity") is not None:
        try:
            set_git_identity(agent, params["git_identity"])
            done.append("git_identity")
        except AgentError as e:  # best effort, like file_sync: never a failed start
            log(f"git identity not set: {e}")
    return {"configured": done}


def git_config_value(value: Any) -> str:
    if not isinstance(value, str) or "\n" in value or "\0" in value:
        raise AgentError(proto.E_BAD_REQUEST, "git identity values are one-line strings")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def set_git_identity(agent: Agent, identity: Any) -> None:
    """The host's git user.name/email for commits made in the guest."""
    if not isinstance(identity, dict):
        raise AgentError(proto.E_BAD_REQUEST, "git_identity must be {name, email}")
    values = {key: identity.get(key) or "" for key in ("name", "email")}
    quoted = {key: git_config_value(value) for key, value in values.items()}
    path = agent.path("/root/.gitconfig")
    if not os.path.exists(path):  # a fresh guest: write the file, no git process (forks are slow)
        lines = "".join(f"\t{key} = {quoted[key]}\n" for key, value in values.items() if value)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_file_atomic(path, "[user]\n" + lines, 0o644)
        return
    for key, value in values.items():
        if value:
            run_tool(agent, ["git", "config", "--file", path, f"user.{key}", value])


def set_ssh_host_key(agent: Agent, key: Any) -> None:
    """Replace every host key with the host-made ed25519 pair (ssh-keygen costs ~1 s under
    TCG). sshd normally waits for identity_ready; one already running is told with SIGHUP."""
    if not isinstance(key, dict) or not all(isinstance(key.get(k), str) for k in ("private", "public")):
        raise AgentError(proto.E_BAD_REQUEST, "ssh_host_key must be {private, public}")
    ssh_dir = agent.path("/etc/ssh")
    os.makedirs(ssh_dir, exist_ok=True)
    base = os.path.join(ssh_dir, "ssh_host_ed25519_key")
    write_file_atomic(base, key["private"], 0o600)  # new pair first: never no key at all
    write_file_atomic(base + ".pub", key["public"], 0o644)
    for name in os.listdir(ssh_dir):
        if name.startswith("ssh_host_") and name not in ("ssh_host_ed25519_key",
                                                         "ssh_host_ed25519_key.pub"):
            os.unlink(os.path.join(ssh_dir, name))
    if agent.testing:
        return
    pid = read_text("/run/sshd.pid").strip()
    if pid.isdigit() and read_text(f"/proc/{pid}/comm").strip() == "sshd":
        import signal

        os.kill(int(pid), signal.SIGHUP)


IDENTITY_READY = "/run/banger/identity-ready"


def mark_identity_ready(agent: Agent) -> None:
    """Services that need the VM's own identity (sshd, via banger's drop-in) wait for this file;
    /run is memory, so a template's clones start without it."""
    os.makedirs(os.path.dirname(agent.path(IDENTITY_READY)), exist_ok=True)
    with open(agent.path(IDENTITY_READY), "w"):
        pass


def set_machine_id(agent: Agent, machine_id: str) -> None:
    if len(machine_id) != 32 or any(c not in "0123456789abcdef" for c in machine_id):
        raise AgentError(proto.E_BAD_REQUEST, "machine_id must be 32 lowercase hex digits")
    write_file_atomic(agent.path("/etc/machine-id"), machine_id + "\n", 0o444)


RNDADDENTROPY = 0x40085203  # _IOW('R', 0x03, int[2])


RNDRESEEDCRNG = 0x5207  # _IO('R', 0x07)


def add_entropy(agent: Agent, b64: str) -> None:
    """Mix host randomness into the kernel pool: a restored snapshot must not repeat its RNG."""
    import base64
    import fcntl
    import struct

    data = base64.b64decode(b64)
    if agent.testing:
        log(f"testing: not adding {len(data)} bytes of entropy")
        return
    with open("/dev/urandom", "wb") as f:
        fcntl.ioctl(f.fileno(), RNDADDENTROPY, struct.pack("ii", len(data) * 8, len(data)) + data)
        # Credited entropy only reaches /dev/urandom at the next periodic reseed: force it now.
        try:
            fcntl.ioctl(f.fileno(), RNDRESEEDCRNG)
        except OSError as e:  # kernels before 4.17 lack it
            log(f"RNDRESEEDCRNG: {e}")


def require_hostname(name: Any) -> str:
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")
    if not isinstance(name, str) or not 0 < len(name) <= 64 or not set(name) <= allowed:
        raise AgentError(proto.E_BAD_REQUEST, f"invalid hostname {name!r}")
    return name


def set_hostname(agent: Agent, name: str) -> None:
    os.makedirs(agent.path("/etc"), exist_ok=True)
    write_file_atomic(agent.path("/etc/hostname"), name + "\n", 0o644)
    hosts = read_text(agent.path("/etc/hosts"), "127.0.0.1\tlocalhost\n").splitlines()
    kept = [line for line in hosts if not line.startswith("127.0.1.1")]
    kept.append(f"127.0.1.1\t{name}")
    write_file_atomic(agent.path("/etc/hosts"), "\n".join(kept) + "\n", 0o644)
    if agent.testing:
        log(f"testing: not setting the kernel hostname to {name}")
        return
    with open("/proc/sys/kernel/hostname", "w") as f:
        f.write(name)


def write_authorized_keys(agent: Agent, keys: list[str]) -> None:
    ssh_dir = agent.path("/root/.ssh")
    os.makedirs(ssh_dir, mode=0o700, exist_ok=True)
    os.chmod(ssh_dir, 0o700)
    text = "".join(key.strip() + "\n" for key in keys if key.strip())
    write_file_atomic(os.path.join(ssh_dir, "authorized_keys"), text, 0o600)


def set_clock(agent: Agent, epoch: float) -> None:
    if agent.testing:
        log(f"testing: not setting the clock to {epoch:.3f}")
        return
    try:
        time.clock_settime(time.CLOCK_REALTIME, epoch)
    except OSError as e:
        raise AgentError(proto.E_FAILED, f"clock_settime: {e.strerror}") from None


TCP_LISTEN = "0A"


def op_ports(channel: Channel, params: dict[str, Any]) -> dict[str, Any]:
    """Listening TCP and bound UDP sockets from /proc/net, with the owning process."""
    owners = socket_owners()
    ports = []
    for proto_name in ("tcp", "tcp6", "udp", "udp6"):
        for entry in read_proc_net(proto_name):
            if proto_name.startswith("tcp") and entry["state"] != TCP_LISTEN:
                continue
            if proto_name.startswith("udp") and entry["remote_port"] != 0:
                continue
            pid, process = owners.get(entry["inode"], (None, ""))
            ports.append({"proto": proto_name, "address": entry["address"],
                          "port": entry["port"], "pid": pid, "process": process})
    ports.sort(key=lambda p: (p["port"], p["proto"]))
    return {"ports": ports}


def read_proc_net(name: str) -> list[dict[str, Any]]:
    entries = []
    for line in read_text(f"/proc/net/{name}").splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        local, remote = fields[1], fields[2]
        addr_hex, _, port_hex = local.partition(":")
        entries.append({"address": decode_address(addr_hex), "port": int(port_hex, 16),
                        "remote_port": int(remote.partition(":")[2], 16),
                        "state": fields[3], "inode": fields[9]})
    return entries


def decode_address(hex_addr: str) -> str:
    import socket

    raw = bytes.fromhex(hex_addr)
    # /proc/net prints each 32-bit word in host (little-endian) order.
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    family = socket.AF_INET if len(words) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, words)


def socket_owners() -> dict[str, tuple[int, str]]:
    """Socket inode -> (pid, command) from /proc/*/fd links (no `ss` needed)."""
    owners: dict[str, tuple[int, str]] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] not in owners:
                owners[target[8:-1]] = (int(pid), process_line(pid))
    return owners


def process_line(pid: str) -> str:
    argv = read_text(f"/proc/{pid}/cmdline").split("\0")
    return " ".join(part for part in argv if part)[:120] or read_text(f"/proc/{pid}/comm").strip()


def op_poweroff(channel: Channel, params: dict[str, Any]) -> dict[str, Any]:
    agent = channel.session.agent
    channel.after_finish = lambda: power_off(agent)  # answer first, then go down
    return {"ok": True}


def power_off(agent: Agent) -> None:
    if agent.testing:
        log("testing: not powering off")
        return
    log("powering off")
    if systemd_is_pid1():
        import subprocess

        subprocess.Popen(["systemctl", "poweroff"])  # the reaper collects it
        return
    os.sync()
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).reboot(LINUX_REBOOT_CMD_POWER_OFF)
    except Exception as e:
        log(f"reboot(2) failed: {e!r}")
    with open("/proc/sysrq-trigger", "w") as f:
        f.write("o")
