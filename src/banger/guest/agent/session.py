"""One host connection in the guest agent: flow control, channels and the session's frames.

Stdlib-only, Python >= 3.7, part of the agent package shipped into guests. The main thread reads
and dispatches frames; each channel runs its operation in its own thread.
"""

from __future__ import annotations

import threading

from . import protocol as proto
from .core import AGENT_VERSION, Aborted, AgentError, log

TYPE_CHECKING = False  # mypy treats this name as true; the guest never imports typing
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from .core import Agent


class Credit:
    """Bytes this side may still send on one channel; WINDOW frames add more."""

    def __init__(self, initial: int) -> None:
        self._available = initial
        self._closed = False
        self._cond = threading.Condition()

    def grant(self, amount: int) -> None:
        with self._cond:
            self._available += amount
            self._cond.notify_all()

    def take(self, most: int) -> int:
        """Block until some credit exists; 0 means the channel is gone."""
        with self._cond:
            while self._available <= 0 and not self._closed:
                self._cond.wait()
            if self._closed:
                return 0
            amount = min(most, self._available)
            self._available -= amount
            return amount

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class Inbox:
    """Data the host sent on one channel, waiting for the operation thread."""

    def __init__(self, limit: int) -> None:
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._limit = limit
        self._eof = False
        self._aborted = False
        self._cond = threading.Condition()

    def put(self, data: bytes) -> bool:
        """False when the host sent more than the credit we gave it."""
        with self._cond:
            if self._aborted or self._eof:
                return True
            self._buffered += len(data)
            self._chunks.append(data)
            self._cond.notify_all()
            return self._buffered <= self._limit

    def put_eof(self) -> None:
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def abort(self) -> None:
        with self._cond:
            self._aborted = True
            self._cond.notify_all()

    def get(self) -> bytes:
        """Next chunk, b"" at EOF; raises Aborted when the channel is gone."""
        with self._cond:
            while not self._chunks and not self._eof and not self._aborted:
                self._cond.wait()
            if self._aborted:
                raise Aborted()
            if not self._chunks:
                return b""
            chunk = self._chunks.pop(0)
            self._buffered -= len(chunk)
            return chunk


class Channel:
    """One request: its operation runs in a thread, frames go through the session."""

    def __init__(self, session: Session, channel_id: int) -> None:
        self.session = session
        self.id = channel_id
        self.credit = Credit(session.window)
        self.inbox = Inbox(session.window)
        self.input_stream = -1  # the stream this op accepts DATA on, if any
        self.closed = False
        self.on_control: Callable[[dict[str, Any]], None] | None = None
        self.after_finish: Callable[[], None] | None = None
        self._abort_hooks: list[Callable[[], None]] = []

    def start(self, operation: Callable[[Channel, dict[str, Any]], dict[str, Any]],
              params: dict[str, Any]) -> None:
        thread = threading.Thread(target=self._run, args=(operation, params), daemon=True)
        thread.start()

    def _run(self, operation: Callable[[Channel, dict[str, Any]], dict[str, Any]],
             params: dict[str, Any]) -> None:
        try:
            result = operation(self, params)
        except Aborted:
            return
        except AgentError as e:
            self.session.finish(self, proto.encode_error(self.id, e.code, e.message))
            return
        except Exception as e:  # an op bug must not take the agent down
            log(f"channel {self.id} failed: {e!r}")
            self.session.finish(self, proto.encode_error(self.id, proto.E_FAILED, str(e)))
            return
        self.session.finish(self, proto.encode_json(proto.RESULT, self.id, result))
        if self.after_finish is not None:
            self.after_finish()

    def add_abort_hook(self, hook: Callable[[], None]) -> None:
        self._abort_hooks.append(hook)
        if self.closed:
            hook()

    def release(self) -> None:
        """Wake every thread blocked on this channel's credit or input."""
        self.closed = True
        self.credit.close()
        self.inbox.abort()

    def abort(self) -> None:
        self.release()
        for hook in self._abort_hooks:
            try:
                hook()
            except Exception as e:
                log(f"abort hook on channel {self.id}: {e!r}")

    def send_data(self, stream: int, data: bytes) -> None:
        self.session.send(proto.encode_frame(proto.DATA, self.id, data, stream), self)

    def send_eof(self, stream: int) -> None:
        self.session.send(proto.encode_frame(proto.EOF, self.id, b"", stream), self)

    def send_event(self, event: dict[str, Any]) -> None:
        self.session.send(proto.encode_json(proto.CONTROL, self.id, event), self)

    def consumed(self, amount: int) -> None:
        """Give the host back credit for input we have processed."""
        self.session.send(proto.encode_window(self.id, amount), self)

    def send_stream(self, stream: int, data: bytes) -> None:
        """Send data as credit allows; raises Aborted when the channel goes away."""
        view = memoryview(data)
        while view:
            amount = self.credit.take(min(len(view), proto.DATA_CHUNK))
            if not amount:
                raise Aborted()
            self.send_data(stream, bytes(view[:amount]))
            view = view[amount:]


class Session:
    """The state one host connection (or one HELLO) owns: its open channels."""

    def __init__(self, agent: Agent, write: Callable[[bytes], None]) -> None:
        self.agent = agent
        self._write = write
        self._lock = threading.Lock()  # one frame at a time on the wire
        self.channels: dict[int, Channel] = {}
        self.alive = True
        self.window = proto.INITIAL_WINDOW  # per channel, per direction; HELLO may raise it

    def send(self, frame: bytes, channel: Channel | None = None, last: bool = False) -> bool:
        with self._lock:
            if not self.alive or (channel is not None and channel.closed):
                return False
            if last and channel is not None:
                channel.closed = True
            try:
                self._write(frame)
            except OSError as e:
                log(f"write to host failed: {e}")
                self.alive = False
                return False
        return True

    def finish(self, channel: Channel, final_frame: bytes) -> None:
        with self._lock:
            if self.channels.get(channel.id) is channel:
                del self.channels[channel.id]
        if self.send(final_frame, channel, last=True):
            self.send(proto.encode_frame(proto.CLOSE, channel.id))
        channel.release()

    def fail_channel(self, channel_id: int, code: str, message: str) -> None:
        log(f"channel {channel_id}: {code}: {message}")
        channel = self.channels.pop(channel_id, None)
        if channel is not None:
            channel.abort()
        self.send(proto.encode_error(channel_id, code, message))
        self.send(proto.encode_frame(proto.CLOSE, channel_id))

    def reset(self) -> None:
        """Abort every channel (killing its processes): the host forgot them."""
        with self._lock:
            channels = list(self.channels.values())
            self.channels.clear()
            for channel in channels:
                channel.closed = True
        for channel in channels:
            channel.abort()

    def dispatch(self, item: proto.Frame | proto.OversizedFrame) -> None:
        try:
            if isinstance(item, proto.OversizedFrame):
                message = f"frame of {item.length} bytes exceeds the {proto.MAX_PAYLOAD} byte limit"
                self.fail_channel(item.channel, proto.E_TOO_LARGE, message)
                return
            handler = self._handlers().get(item.type)
            if handler is None:
                self.fail_channel(item.channel, proto.E_BAD_FRAME,
                                  f"unknown frame type {item.type}")
                return
            handler(item)
        except proto.ProtocolError as e:
            self.fail_channel(item.channel, proto.E_BAD_FRAME, str(e))
        except Exception as e:  # never let one frame kill the agent
            log(f"dispatching {item!r}: {e!r}")
            self.fail_channel(item.channel, proto.E_FAILED, f"agent error: {e!r}")

    def _handlers(self) -> dict[int, Callable[[proto.Frame], None]]:
        return {
            proto.HELLO: self._on_hello,
            proto.OPEN: self._on_open,
            proto.DATA: self._on_data,
            proto.EOF: self._on_eof,
            proto.WINDOW: self._on_window,
            proto.CONTROL: self._on_control,
            proto.CLOSE: self._on_close,
        }

    def _on_hello(self, frame: proto.Frame) -> None:
        hello = frame.json()
        self.reset()
        self.window = proto.agreed_window(hello.get("window"))
        self.send(proto.encode_json(proto.HELLO_ACK, proto.SESSION_CHANNEL, {
            "version": proto.PROTOCOL_VERSION,
            "nonce": hello.get("nonce"),
            "agent_version": AGENT_VERSION,
            "pid1": self.agent.pid1,
            "window": self.window,
        }))

    def _on_open(self, frame: proto.Frame) -> None:
        if frame.channel == proto.SESSION_CHANNEL or frame.channel in self.channels:
            self.fail_channel(frame.channel, proto.E_BAD_REQUEST,
                              f"channel id {frame.channel} is reserved or in use")
            return
        request = frame.json()
        op, params = str(request.get("op")), request.get("params") or {}
        operation = OPERATIONS.get(op)
        if operation is None:
            self.fail_channel(frame.channel, proto.E_UNKNOWN_OP, f"unknown op {op!r}")
            return
        if not isinstance(params, dict):
            self.fail_channel(frame.channel, proto.E_BAD_REQUEST, "params must be an object")
            return
        channel = Channel(self, frame.channel)
        channel.input_stream = INPUT_STREAMS.get(op, -1)
        self.channels[frame.channel] = channel
        channel.start(operation, params)

    def _on_data(self, frame: proto.Frame) -> None:
        channel = self.channels.get(frame.channel)
        if channel is None:
            return  # in flight when the channel finished
        if frame.stream != channel.input_stream:
            raise proto.ProtocolError(f"this channel takes no data on stream {frame.stream}")
        if not channel.inbox.put(frame.payload):
            self.fail_channel(frame.channel, proto.E_FLOW_CONTROL,
                              "host sent more data than its window allows")

    def _on_eof(self, frame: proto.Frame) -> None:
        channel = self.channels.get(frame.channel)
        if channel is not None and frame.stream == channel.input_stream:
            channel.inbox.put_eof()

    def _on_window(self, frame: proto.Frame) -> None:
        credit = proto.decode_window(frame.payload)
        channel = self.channels.get(frame.channel)
        if channel is not None:
            channel.credit.grant(credit)

    def _on_control(self, frame: proto.Frame) -> None:
        channel = self.channels.get(frame.channel)
        if channel is None:
            return
        message = frame.json()
        if channel.on_control is None:
            raise proto.ProtocolError("this channel takes no control messages")
        channel.on_control(message)

    def _on_close(self, frame: proto.Frame) -> None:
        channel = self.channels.pop(frame.channel, None)
        if channel is not None:
            channel.abort()
            self.send(proto.encode_frame(proto.CLOSE, frame.channel))



INPUT_STREAMS = {"exec": proto.STDIN, "put": proto.TAR}  # DATA may arrive before the op runs


OPERATIONS: dict[str, Callable[[Channel, dict[str, Any]], dict[str, Any]]] = {}  # the main module fills it
