"""Host-side state of one agent request: its answer, flow control both ways, capped output buffers.

The guest may send anything, so a channel only keeps what it asked for: DATA on the streams its
op produces, never more than the window it granted (a violation ends the channel), one answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import Any, Protocol

from banger.agent.results import AgentError, ControlEvent, decode
from banger.errors import BangerError, OperationFailed
from banger.guest.agent import protocol as proto
from banger.textsafe import one_line

OUTPUT_CAP = 16 * 1024 * 1024  # default cap on the output one guest command may hand us whole
OUTPUT_ADVICE = "write large output to a file in the guest"



class Connection(Protocol):
    """What a channel needs from its connection (AgentClient)."""

    def _write(self, frame: bytes) -> None: ...

    async def _drain(self) -> None: ...

    def _ended(self, channel: Channel) -> None: ...


def mark_exception_seen(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen: nobody may ever await a failed channel."""
    if not future.cancelled():
        future.exception()


class StreamBuffer:
    """Output of one stream waiting for its reader; the window keeps it small."""

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self.size = 0
        self.ended = False
        self._ready = asyncio.Event()

    def put(self, data: bytes) -> None:
        self._chunks.append(data)
        self.size += len(data)
        self._ready.set()

    def end(self, *, discard: bool = False) -> None:
        self.ended = True
        if discard:
            self._chunks.clear()
            self.size = 0
        self._ready.set()

    async def get(self) -> bytes | None:
        """The next chunk, or None once the stream ended and is drained."""
        while not self._chunks:
            if self.ended:
                return None
            self._ready.clear()
            await self._ready.wait()
        chunk = self._chunks.popleft()
        self.size -= len(chunk)
        return chunk


class Channel:
    """One request. `result` holds the raw RESULT payload: the caller knows its type."""

    def __init__(self, conn: Connection, channel_id: int, streams: Iterable[int] = (),
                 window: int = proto.INITIAL_WINDOW) -> None:
        loop = asyncio.get_running_loop()
        self.conn = conn
        self.id = channel_id
        self.result: asyncio.Future[bytes] = loop.create_future()
        self.started: asyncio.Future[ControlEvent] = loop.create_future()
        for future in (self.result, self.started):
            future.add_done_callback(mark_exception_seen)
        self.failure: BaseException | None = None
        self.send_credit = window
        self.grant_batch = window // 4  # credit goes back per quarter window, not per chunk
        self.credit_changed = asyncio.Event()
        self.recv_credit = window  # DATA bytes the agent may still send us
        self._ungranted = 0
        self.streams = {stream: StreamBuffer() for stream in streams}

    @property
    def finished(self) -> bool:
        return self.result.done()

    @property
    def buffered(self) -> int:
        return sum(buffer.size for buffer in self.streams.values())

    # ---- frames from the agent

    def on_data(self, frame: proto.Frame) -> bool:
        """Keep DATA for a stream someone reads; False when it is past the granted window."""
        size = len(frame.payload)
        if size > self.recv_credit:
            return False
        self.recv_credit -= size  # dropped data counts too: the window covers the channel
        buffer = self.streams.get(frame.stream)
        if buffer is not None and not buffer.ended:
            buffer.put(frame.payload)
        return True

    def on_frame(self, frame: proto.Frame) -> None:
        """Any other frame; a malformed one raises BangerError (the caller aborts the channel)."""
        if frame.type == proto.EOF:
            buffer = self.streams.get(frame.stream)
            if buffer is not None:
                buffer.end()
        elif frame.type == proto.WINDOW:
            try:
                self.send_credit += proto.decode_window(frame.payload)
            except proto.ProtocolError as e:
                raise OperationFailed(f"the guest agent sent a malformed WINDOW frame: {e}") from None
            self.credit_changed.set()
        elif frame.type == proto.CONTROL:
            event = decode(frame.payload, ControlEvent, "start event")
            if event.event == "started" and not self.started.done():
                self.started.set_result(event)
        elif frame.type == proto.RESULT:
            self._finish(frame.payload)
        elif frame.type == proto.ERROR:
            error = decode(frame.payload, AgentError, "error")
            message = one_line(error.message, limit=500)
            if error.code == proto.E_UNKNOWN_OP:  # booted (or saved) by an older banger
                message = (f"the VM's guest agent is older than this banger ({message}); "
                           "a fresh boot installs the current one: `banger vm restart VM`")
            self.fail(OperationFailed(message, agent_code=one_line(error.code, limit=64)))

    # ---- ending

    def _finish(self, payload: bytes) -> None:
        if self.finished:
            return
        self.result.set_result(payload)
        if not self.started.done():
            self.started.set_exception(OperationFailed("the guest agent answered before starting"))
        for buffer in self.streams.values():
            buffer.end()  # what was read stays readable
        self.conn._ended(self)

    def fail(self, error: BaseException) -> None:
        """End the request with error; buffered output is dropped."""
        if self.finished:
            return
        self.failure = error
        self.result.set_exception(error)
        if not self.started.done():
            self.started.set_exception(error)
        self.credit_changed.set()
        for buffer in self.streams.values():
            buffer.end(discard=True)
        self.conn._ended(self)

    def abort(self, error: BaseException | None = None) -> None:
        """Fail the request and tell the agent to drop it (it kills the process)."""
        if self.finished:
            return  # the agent already ended it, or we did
        self.fail(error or OperationFailed("request aborted"))
        with contextlib.suppress(BangerError):
            self.conn._write(proto.encode_frame(proto.CLOSE, self.id))

    def raise_if_failed(self) -> None:
        if self.failure is not None:
            raise self.failure

    # ---- frames to the agent

    async def send(self, stream_id: int, data: bytes) -> None:
        """Send data as the agent's window allows; dropped if the request already ended."""
        view = memoryview(data)
        while view:
            self.raise_if_failed()
            if self.finished:
                return
            if self.send_credit <= 0:
                self.credit_changed.clear()
                await self.credit_changed.wait()
                continue
            amount = min(len(view), self.send_credit, proto.DATA_CHUNK)
            self.conn._write(proto.encode_frame(proto.DATA, self.id, bytes(view[:amount]),
                                                stream_id))
            self.send_credit -= amount
            view = view[amount:]
            await self.conn._drain()

    def send_eof(self, stream_id: int) -> None:
        self._write_while_open(proto.encode_frame(proto.EOF, self.id, b"", stream_id))

    def send_control(self, message: dict[str, Any]) -> None:
        self._write_while_open(proto.encode_json(proto.CONTROL, self.id, message))

    def consumed(self, amount: int) -> None:
        """The reader took amount bytes: the agent may send that much more (batched)."""
        self._ungranted += amount
        if self._ungranted >= self.grant_batch and not self.finished:
            self.conn._write(proto.encode_window(self.id, self._ungranted))
            self.recv_credit += self._ungranted
            self._ungranted = 0

    def _write_while_open(self, frame: bytes) -> None:
        """Once the request has ended the agent has forgotten the channel: drop the frame."""
        if not self.finished:
            self.conn._write(frame)


class OutputBudget:
    """Bytes a reader may still collect; past it the request fails with a clear error."""

    def __init__(self, limit: int, what: str, advice: str) -> None:
        self.limit = limit
        self.left = limit
        self.what = what
        self.advice = advice

    def take(self, amount: int) -> None:
        self.left -= amount
        if self.left < 0:
            raise OperationFailed(f"{self.what} is over the {_size(self.limit)} cap and was "
                                  f"stopped; {self.advice}")


def _size(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit % (1 << 20) == 0 else f"{limit} bytes"


class OutputStream:
    """One output stream of a request; reading gives the agent more window."""

    def __init__(self, channel: Channel, stream_id: int) -> None:
        self._channel = channel
        self._buffer = channel.streams[stream_id]

    async def read(self) -> bytes:
        """The next chunk, or b"" at end of stream; raises if the request failed."""
        chunk = await self._buffer.get()
        if chunk is None:
            self._channel.raise_if_failed()
            return b""
        self._channel.consumed(len(chunk))
        return chunk

    async def read_all(self, max_bytes: int = OUTPUT_CAP) -> bytes:
        """Everything until EOF; past max_bytes the request is aborted and this raises."""
        return await self.collect(OutputBudget(max_bytes, "the guest command's output",
                                               OUTPUT_ADVICE))

    async def collect(self, budget: OutputBudget) -> bytes:
        """Everything until EOF, drawing on a budget other streams may share."""
        chunks = []
        while chunk := await self.read():
            try:
                budget.take(len(chunk))
            except OperationFailed as e:
                self._channel.abort(e)
                raise
            chunks.append(chunk)
        return b"".join(chunks)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        while chunk := await self.read():
            yield chunk
