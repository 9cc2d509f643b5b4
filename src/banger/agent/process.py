"""A command running in the guest, as the host sees it: streams, signals, exit status."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from banger.agent.channel import OUTPUT_ADVICE, OUTPUT_CAP, Channel, OutputBudget, OutputStream
from banger.agent.results import ExitResult, decode
from banger.guest.agent import protocol as proto


@dataclass(frozen=True)
class ExitStatus:
    code: int | None
    signal: int | None

    @property
    def shell_code(self) -> int:
        """The code a shell would report: the exit code, or 128 + signal."""
        return self.code if self.code is not None else 128 + (self.signal or 0)


@dataclass(frozen=True)
class PtySpec:
    rows: int = 24
    cols: int = 80
    term: str = "xterm-256color"


class AgentProcess:
    """A command running in the guest, shaped like asyncio's Process."""

    def __init__(self, channel: Channel, drain: Callable[[], Awaitable[None]], pid: int) -> None:
        self._channel = channel
        self._drain = drain  # the connection's: waits until its writes have gone out
        self.pid = pid
        self.stdout = OutputStream(channel, proto.STDOUT)
        self.stderr = OutputStream(channel, proto.STDERR)

    async def write(self, data: bytes) -> None:
        await self._channel.send(proto.STDIN, data)

    async def close_stdin(self) -> None:
        self._channel.send_eof(proto.STDIN)
        await self._drain()

    def resize(self, rows: int, cols: int) -> None:
        self._channel.send_control({"type": "resize", "rows": rows, "cols": cols})

    def signal(self, signum: int) -> None:
        self._channel.send_control({"type": "signal", "signal": int(signum)})

    async def wait(self) -> ExitStatus:
        """Exit status; keep reading stdout/stderr meanwhile or the command stalls."""
        result = decode(await self._channel.result, ExitResult, "exit status")
        return ExitStatus(code=result.exit_code, signal=result.signal)

    async def communicate(self, data: bytes | None = None, *,
                          max_output: int = OUTPUT_CAP) -> tuple[bytes, bytes, ExitStatus]:
        """Feed stdin (if it was requested) and collect all output, at most max_output bytes
        of stdout and stderr together (past it the command is killed and this raises)."""

        async def feed() -> None:
            if data:
                await self.write(data)
            await self.close_stdin()

        budget = OutputBudget(max_output, "the guest command's output", OUTPUT_ADVICE)
        jobs: list[Any] = [self.stdout.collect(budget), self.stderr.collect(budget)]
        if data is not None:
            jobs.append(feed())
        outputs = await asyncio.gather(*jobs)
        return outputs[0], outputs[1], await self.wait()

    def kill(self) -> None:
        """Abort the request; the agent kills the whole process group."""
        self._channel.abort()
