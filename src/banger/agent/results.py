"""Typed, bounded shapes of everything the guest agent answers; the guest may send anything.

Every JSON payload from the agent is decoded into one of these structs before banger uses it, so a
hostile or broken agent yields one clear error ("the guest agent sent an invalid …"), never a
traceback. Unknown fields are ignored (a newer agent may add some); the host builds its own
records from the typed fields only.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal, TypeVar

import msgspec

from banger.errors import OperationFailed
from banger.guest.agent import protocol as proto
from banger.textsafe import one_line

PID_MAX = 4_194_304  # the kernel's largest pid_max
MAX_PORTS = 16_384  # listening sockets one answer may list

Short = Annotated[str, msgspec.Meta(max_length=64)]
Text = Annotated[str, msgspec.Meta(max_length=1024)]
Count = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Pid = Annotated[int, msgspec.Meta(ge=1, le=PID_MAX)]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
ExitCode = Annotated[int, msgspec.Meta(ge=0, le=255)]
Signal = Annotated[int, msgspec.Meta(ge=1, le=64)]
Seconds = Annotated[float, msgspec.Meta(ge=0)]

T = TypeVar("T")


class HelloNonce(msgspec.Struct, frozen=True):
    """Just the nonce of a HELLO_ACK: answers to an older hello are ignored, not judged."""

    nonce: Short | None = None


class HelloAck(msgspec.Struct, frozen=True):
    version: Annotated[int, msgspec.Meta(ge=0, le=65535)]
    nonce: Short
    agent_version: Short
    pid1: bool
    # The per-channel window the agent agreed to; an older agent sends none (the default).
    window: Annotated[int, msgspec.Meta(ge=proto.INITIAL_WINDOW, le=proto.MAX_WINDOW)] = \
        proto.INITIAL_WINDOW


class AgentError(msgspec.Struct, frozen=True):
    """An ERROR frame; its message is cleaned and cut before anyone shows it."""

    message: Annotated[str, msgspec.Meta(max_length=65536)] = "agent error"
    code: Short = "failed"


class ControlEvent(msgspec.Struct, frozen=True):
    """CONTROL from the agent: only `started` has a meaning (the exec'd process runs)."""

    event: Short
    pid: Pid | None = None
    writer: bool | None = None  # session.attach: whether this attach may type

    def __post_init__(self) -> None:
        if self.event == "started" and self.pid is None:
            raise ValueError("a started event needs a pid")


class ExitResult(msgspec.Struct, frozen=True):
    exit_code: ExitCode | None = None
    signal: Signal | None = None

    def __post_init__(self) -> None:
        if (self.exit_code is None) == (self.signal is None):
            raise ValueError("exactly one of exit_code and signal must be set")


class Health(msgspec.Struct, frozen=True):
    ok: bool
    version: Short
    protocol: Annotated[int, msgspec.Meta(ge=0, le=65535)]
    uptime: Seconds
    pid1: bool


class Memory(msgspec.Struct, frozen=True):
    total: Count | None = None
    available: Count | None = None


class Info(msgspec.Struct, frozen=True):
    hostname: Annotated[str, msgspec.Meta(max_length=255)]
    kernel: Text
    arch: Short
    os_release: Annotated[dict[Short, Text], msgspec.Meta(max_length=128)]
    cpus: Annotated[int, msgspec.Meta(ge=1, le=65536)] | None
    memory: Memory
    python: Short
    systemd: bool
    agent_pid1: bool
    boot_uptime: Seconds | None = None


class Configured(msgspec.Struct, frozen=True):
    configured: Annotated[list[Short], msgspec.Meta(max_length=64)]


class PortEntry(msgspec.Struct, frozen=True):
    proto: Literal["tcp", "tcp6", "udp", "udp6"]
    address: Short
    port: Port
    pid: Pid | None = None
    process: Annotated[str, msgspec.Meta(max_length=256)] = ""

    def __post_init__(self) -> None:
        # /proc/net never has a scope id, and one ("%…") could carry any text
        if "%" in self.address:
            raise ValueError(f"address {self.address!r} has a scope id")
        ipaddress.ip_address(self.address)  # ValueError names the bad address


class Ports(msgspec.Struct, frozen=True):
    ports: Annotated[list[PortEntry], msgspec.Meta(max_length=MAX_PORTS)]


class PutResult(msgspec.Struct, frozen=True):
    members: Count


class GetResult(msgspec.Struct, frozen=True):
    bytes: Count


class Ack(msgspec.Struct, frozen=True):
    ok: bool


def decode(payload: bytes, kind: type[T], what: str) -> T:
    """payload as kind, or OperationFailed naming what the agent got wrong."""
    try:
        return msgspec.json.decode(payload, type=kind)
    except (msgspec.DecodeError, RecursionError) as e:  # ValidationError is a DecodeError
        reason = one_line(str(e), limit=200)
    raise OperationFailed(f"the guest agent sent an invalid {what}: {reason} "
                          "(its agent may be modified or from another banger version)")
