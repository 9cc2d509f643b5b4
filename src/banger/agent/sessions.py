"""Host side of guest sessions: typed, bounded answers and the calls on one agent connection.

The guest owns its sessions (they outlive this connection); everything it says about them is
decoded into the structs below before banger uses it: names match the session name rule, the
command line and paths are bounded, an exited session has at most one of exit code and signal.
Log bytes are the program's output and pass through as bytes; metadata is printed only through
banger.textsafe by the CLI.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

from banger.agent.channel import Channel, OutputStream
from banger.agent.process import PtySpec
from banger.agent.results import Count, ExitCode, Pid, Seconds, Signal, decode
from banger.errors import InvalidArgument
from banger.guest.agent import protocol as proto

if TYPE_CHECKING:
    from banger.agent.client import AgentClient

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
SessionName = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN, max_length=63)]
Arg = Annotated[str, msgspec.Meta(max_length=65536)]
Path = Annotated[str, msgspec.Meta(max_length=4096)]
MAX_LIST = 1024  # sessions one list answer may hold (the agent keeps at most 512)
DEFAULT_GRACE = 10.0


class SessionInfo(msgspec.Struct, frozen=True):
    name: SessionName
    state: Literal["running", "exited"]
    argv: Annotated[list[Arg], msgspec.Meta(max_length=4096)]
    cwd: Path
    tty: bool
    pid: Pid | None
    started: Seconds | None
    log_cap: Count
    log_start: Count
    log_end: Count
    exit_code: ExitCode | None = None
    signal: Signal | None = None
    ended: Seconds | None = None
    lost: bool = False  # exited without a status: the guest rebooted under it

    def __post_init__(self) -> None:
        if self.name.isdigit():
            raise ValueError("a session name cannot be only digits")
        if self.log_start > self.log_end:
            raise ValueError("log_start is past log_end")
        if self.exit_code is not None and self.signal is not None:
            raise ValueError("a session has an exit code or a signal, not both")
        if self.state == "running" and (self.exit_code is not None or self.signal is not None):
            raise ValueError("a running session has no exit status")


class SessionList(msgspec.Struct, frozen=True):
    sessions: Annotated[list[SessionInfo], msgspec.Meta(max_length=MAX_LIST)]


class LogsAnswer(msgspec.Struct, frozen=True):
    start: Count  # where the bytes sent began: later than asked when older ones were dropped
    end: Count
    session: SessionInfo


class WriteAnswer(msgspec.Struct, frozen=True):
    bytes: Count


def check_name(name: str) -> str:
    """The session name rule (the VM name rule): lowercase letters, digits, inner dashes."""
    import re

    if not re.fullmatch(NAME_PATTERN, name) or name.isdigit():
        raise InvalidArgument(f"invalid session name {name!r}: use 1-63 lowercase letters, "
                              "digits and dashes, starting and ending with a letter or digit")
    return name


@dataclass(frozen=True)
class StartSpec:
    name: str
    argv: Sequence[str]
    cwd: str | None = None
    env: dict[str, str] | None = None
    pty: PtySpec | None = None
    log_cap: int | None = None
    user: str | None = None


class SessionStream:
    """A logs or attach request: the session's output as it comes, then its final state."""

    def __init__(self, client: AgentClient, channel: Channel, writer: bool) -> None:
        self._client = client
        self._channel = channel
        self.writer = writer
        self.output = OutputStream(channel, proto.STDOUT)

    async def write(self, data: bytes) -> None:
        """Input for the session (dropped by the agent unless this attach is the writer)."""
        await self._channel.send(proto.STDIN, data)

    def resize(self, rows: int, cols: int) -> None:
        self._channel.send_control({"type": "resize", "rows": rows, "cols": cols})

    async def result(self) -> bytes:
        return await self._channel.result

    def close(self) -> None:
        """Stop this request; the session itself keeps running."""
        self._channel.abort()

    async def chunks(self) -> AsyncIterator[bytes]:
        while chunk := await self.output.read():
            yield chunk


class Sessions:
    """Session operations on one agent connection (Sessions(agent))."""

    def __init__(self, client: AgentClient) -> None:
        self._client = client

    async def _call(self, op: str, params: dict[str, Any], timeout: float = 30.0) -> SessionInfo:
        return await self._client._request(op, params, timeout, SessionInfo, "session")

    async def start(self, spec: StartSpec, timeout: float = 30.0) -> SessionInfo:
        params: dict[str, Any] = {"name": check_name(spec.name), "argv": list(spec.argv),
                                  "cwd": spec.cwd, "env": spec.env or {}, "user": spec.user,
                                  "log_cap": spec.log_cap}
        if not spec.argv:
            raise InvalidArgument("a session needs a command")
        if spec.pty is not None:
            params["pty"] = {"rows": spec.pty.rows, "cols": spec.pty.cols, "term": spec.pty.term}
        return await self._call("session.start", params, timeout)

    async def list(self, timeout: float = 30.0) -> list[SessionInfo]:
        answer = await self._client._request("session.list", {}, timeout, SessionList,
                                             "session list")
        return answer.sessions

    async def show(self, name: str, timeout: float = 30.0) -> SessionInfo:
        return await self._call("session.show", {"name": check_name(name)}, timeout)

    async def signal(self, name: str, signum: int, grace: float = 0.0) -> SessionInfo:
        """signum to the session's process group; with grace, SIGKILL when it outlives it."""
        return await self._call("session.signal", {"name": check_name(name), "signal": signum,
                                                   "grace": grace}, timeout=grace + 30.0)

    async def remove(self, name: str, force: bool = False) -> SessionInfo:
        return await self._call("session.remove", {"name": check_name(name), "force": force})

    async def write(self, name: str, data: bytes, *, close: bool = False,
                    timeout: float = 30.0) -> int:
        channel = self._client._open("session.write", {"name": check_name(name), "close": close})
        try:
            await channel.send(proto.STDIN, data)
            channel.send_eof(proto.STDIN)
        except BaseException:
            channel.abort()
            raise
        payload = await self._client._answer(channel, channel.result, "session.write", timeout)
        return decode(payload, WriteAnswer, "session write answer").bytes

    def logs(self, name: str, *, follow: bool = False, lines: int | None = None,
             offset: int = 0) -> SessionStream:
        params: dict[str, Any] = {"name": check_name(name), "follow": follow, "offset": offset}
        if lines is not None:
            params["lines"] = lines
        channel = self._client._open("session.logs", params, (proto.STDOUT,))
        return SessionStream(self._client, channel, False)

    async def attach(self, name: str, *, write: bool, rows: int = 24, cols: int = 80,
                     lines: int = 0, timeout: float = 30.0) -> SessionStream:
        params = {"name": check_name(name), "write": write, "rows": rows, "cols": cols,
                  "lines": lines}
        channel = self._client._open("session.attach", params, (proto.STDOUT,))
        event = await self._client._answer(channel, channel.started, "session.attach", timeout)
        return SessionStream(self._client, channel, bool(event.writer))


def logs_answer(payload: bytes) -> LogsAnswer:
    return decode(payload, LogsAnswer, "session logs answer")


def final_state(payload: bytes) -> SessionInfo:
    return decode(payload, SessionInfo, "session")


__all__ = ["LogsAnswer", "SessionInfo", "SessionStream", "Sessions",
           "StartSpec", "check_name", "final_state", "logs_answer"]
