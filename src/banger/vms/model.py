"""A VM's durable record, its states and the rules for names and sizes."""

from __future__ import annotations

import re
from enum import StrEnum

import msgspec

from banger.config.model import MAX_DISK_MIB, MAX_MEMORY_MIB, MAX_VCPU
from banger.errors import InvalidArgument

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
MIN_MEMORY_MIB = 128
MIN_DISK_MIB = 1024


class VmState(StrEnum):
    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    ERROR = "error"


class VmRecord(msgspec.Struct):
    id: str
    name: str
    state: str
    image: str
    kernel: str
    vcpu: int
    memory_mib: int
    disk_mib: int
    created_at: str
    updated_at: str
    ip: str | None = None
    last_error: str | None = None
    workspace: dict[str, str] | None = None
    net_mode: str | None = None  # "tap" | "user"; ip is the host-reachable address
    mac: str | None = None
    nat: bool = False
    publish: list[str] = []  # "HOSTPORT:GUESTPORT"
    egress: list[str] = []  # --allow rules: all the guest may connect to
    # `vm run --rm`: the client process whose exit deletes the VM (vms/owner.py)
    owner_pid: int | None = None
    owner_start: str | None = None  # "BOOT_ID:START_TICKS": tells owner_pid from a reused pid


def validate_name(name: str) -> str:
    """Names become hostnames and DNS labels: lowercase letters, digits and inner dashes."""
    if not _NAME.fullmatch(name):
        raise InvalidArgument(
            f"invalid VM name {name!r}: use 1-63 lowercase letters, digits and dashes, "
            "starting and ending with a letter or digit"
        )
    if name.isdigit():
        raise InvalidArgument(f"invalid VM name {name!r}: a name cannot be only digits")
    return name


def validate_shape(vcpu: int, memory_mib: int, disk_mib: int, *, host_cpus: int,
                   host_memory_mib: int) -> None:
    """Reject sizes that are non-positive or that this host cannot give."""
    if not 0 < vcpu <= min(MAX_VCPU, max(host_cpus * 4, 1)):
        raise InvalidArgument(f"invalid vcpu {vcpu}: use 1..{min(MAX_VCPU, host_cpus * 4)}")
    if not MIN_MEMORY_MIB <= memory_mib <= min(MAX_MEMORY_MIB, host_memory_mib):
        raise InvalidArgument(
            f"invalid memory {memory_mib} MiB: use {MIN_MEMORY_MIB} MiB..{host_memory_mib} MiB "
            "(the host's RAM)"
        )
    if not MIN_DISK_MIB <= disk_mib <= MAX_DISK_MIB:
        raise InvalidArgument(f"invalid disk {disk_mib} MiB: use 1G..{MAX_DISK_MIB // 1024}G")
