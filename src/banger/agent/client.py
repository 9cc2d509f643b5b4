"""Host side of the agent protocol: one asyncio connection multiplexing many requests.

The guest is hostile (root in it may replace the agent): every frame is bounded, every answer is
decoded into a typed struct (banger.agent.results), and memory per connection stays within the
bound stated in docs/agent-protocol.md whatever the guest sends.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from banger.agent.channel import OUTPUT_CAP, Channel, OutputBudget, OutputStream, mark_exception_seen
from banger.agent.process import AgentProcess, PtySpec
from banger.agent.results import (
    Ack,
    Configured,
    GetResult,
    Health,
    HelloAck,
    HelloNonce,
    Info,
    PortEntry,
    Ports,
    PutResult,
    decode,
)
from banger.errors import BangerError, OperationFailed, Unavailable
from banger.guest.agent import protocol as proto

__all__ = ["EXPORT_CAP", "OUTPUT_CAP", "AgentClient", "connect_stream", "connect_unix"]

READ_SIZE = 1024 * 1024
HELLO_RESEND_SECONDS = 1.0  # the agent may still be booting when we first say hello
EXPORT_CAP = 1024 * 1024 * 1024  # get(): one tar stream out of the guest
MAX_UNCLOSED = 1024  # ended channels waiting for the agent's CLOSE; past it the agent is broken
STOP_GRACE = 4 * 1024 * 1024  # data a window violator may still have in flight when told to stop

T = TypeVar("T")


class AgentClient:
    """One connection to a guest agent; call hello() before anything else."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._decoder = proto.FrameDecoder()
        self._channels: dict[int, Channel] = {}
        self._unclosed: set[int] = set()  # ended here, the agent's CLOSE still to come
        self._next_id = 1
        self._read_task: asyncio.Task[None] | None = None
        self._hello: tuple[str, asyncio.Future[HelloAck]] | None = None
        self._ready = False
        self._lost: BangerError | None = None
        self.window = proto.INITIAL_WINDOW  # per channel; HELLO may agree on a larger one

    @property
    def connected(self) -> bool:
        """False once the connection dropped or the client was closed."""
        return self._lost is None

    # ---- session

    async def hello(self, timeout: float = 10.0) -> HelloAck:
        """Reset the agent's session (aborting our old requests) and wait for its answer."""
        if self._read_task is None:
            self._read_task = asyncio.create_task(self._read_loop())
        self._ready = False
        self._fail_all(Unavailable("the agent session was reset"))
        nonce = secrets.token_hex(8)
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[HelloAck] = loop.create_future()
        answered.add_done_callback(mark_exception_seen)
        self._hello = (nonce, answered)
        deadline = loop.time() + timeout
        while not answered.done():
            self._write(proto.encode_json(proto.HELLO, proto.SESSION_CHANNEL,
                                          {"version": proto.PROTOCOL_VERSION, "nonce": nonce,
                                           "window": proto.LARGE_WINDOW}))
            await self._drain()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise Unavailable(f"the guest agent did not answer hello within {timeout:g}s")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(answered),
                                       min(remaining, HELLO_RESEND_SECONDS))
        return answered.result()

    async def close(self) -> None:
        self._fail_all(Unavailable("the agent client was closed"))
        self._lost = self._lost or Unavailable("the agent client was closed")
        if self._read_task is not None:
            self._read_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await self._read_task
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    # ---- simple requests

    async def health(self, timeout: float = 5.0) -> Health:
        return await self._request("health", {}, timeout, Health, "health answer")

    async def info(self, timeout: float = 10.0) -> Info:
        return await self._request("info", {}, timeout, Info, "info answer")

    async def configure(
        self,
        *,
        hostname: str | None = None,
        authorized_keys: Sequence[str] | None = None,
        clock: float | None = None,
        machine_id: str | None = None,
        entropy: bytes | None = None,
        network: dict[str, Any] | None = None,
        git_identity: dict[str, str] | None = None,
        ssh_host_key: dict[str, str] | None = None,
        identity_ready: bool = False,
        timeout: float = 30.0,
    ) -> Configured:
        """identity_ready: the VM has its own identity now; sshd may start (templates never)."""
        params: dict[str, Any] = {"hostname": hostname, "clock": clock, "machine_id": machine_id,
                                  "git_identity": git_identity, "ssh_host_key": ssh_host_key,
                                  "identity_ready": identity_ready or None}
        if entropy is not None:
            params["entropy"] = base64.b64encode(entropy).decode()
        if authorized_keys is not None:
            params["authorized_keys"] = list(authorized_keys)
        if network is not None:
            params["network"] = network  # {mac, address: "A/PREFIX", gateway, dns: [...]}
        return await self._request("configure", params, timeout, Configured, "configure answer")

    async def ports(self, timeout: float = 10.0) -> list[PortEntry]:
        """Listening TCP and bound UDP sockets in the guest."""
        return (await self._request("ports", {}, timeout, Ports, "ports list")).ports

    async def poweroff(self, timeout: float = 10.0) -> None:
        """The agent answers, then powers the guest off in the background."""
        await self._request("poweroff", {}, timeout, Ack, "poweroff answer")

    # ---- streaming requests

    async def exec(
        self,
        argv: Sequence[str] | None = None,
        *,
        shell: str | None = None,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        user: str | int | None = None,
        stdin: bool = False,
        pty: PtySpec | None = None,
        timeout: float = 30.0,
    ) -> AgentProcess:
        """Start a command (argv, or a `shell` string for /bin/sh -c) and return once it runs.

        Without stdin=True (or a pty) the command reads /dev/null.
        """
        if (argv is None) == (shell is None):
            raise ValueError("exec needs exactly one of argv or shell")
        params: dict[str, Any] = {"env": env or {}, "cwd": cwd, "user": user, "stdin": stdin}
        if shell is not None:
            params["shell"] = shell
        else:
            params["argv"] = list(argv or [])
        if pty is not None:
            params["pty"] = {"rows": pty.rows, "cols": pty.cols, "term": pty.term}
        channel = self._open("exec", params, (proto.STDOUT, proto.STDERR))
        event = await self._answer(channel, channel.started, "exec", timeout)
        assert event.pid is not None  # a started event always has one (ControlEvent checks)
        return AgentProcess(channel, self._drain, event.pid)

    async def put(
        self, dest: str, tar_chunks: AsyncIterable[bytes], *, timeout: float = 60.0
    ) -> dict[str, Any]:
        """Extract a tar stream under the guest directory dest (created if missing): {members}."""
        channel = self._open("put", {"dest": dest})
        try:
            async for chunk in tar_chunks:
                await channel.send(proto.TAR, chunk)
                if channel.finished:
                    break  # the agent refused the stream; its error is in the result
            channel.send_eof(proto.TAR)
        except BaseException:
            channel.abort()
            raise
        payload = await self._answer(channel, channel.result, "put", timeout)
        return {"members": decode(payload, PutResult, "put answer").members}

    async def get(self, path: str, *, max_bytes: int = EXPORT_CAP) -> AsyncIterator[bytes]:
        """A tar stream of the guest path (its top entry is the path's basename); past
        max_bytes the request is aborted and this raises OperationFailed."""
        channel = self._open("get", {"path": path}, (proto.TAR,))
        stream = OutputStream(channel, proto.TAR)
        budget = OutputBudget(max_bytes, f"the guest's tar stream of {path}",
                              "export less, or remove large files from it in the guest")
        try:
            while chunk := await stream.read():
                budget.take(len(chunk))
                yield chunk
            decode(await channel.result, GetResult, "get answer")
        except OperationFailed as e:
            channel.abort(e)  # a no-op when the channel itself failed
            raise
        finally:
            channel.abort()  # the consumer stopped early

    # ---- plumbing

    async def _request(self, op: str, params: dict[str, Any], timeout: float, kind: type[T],
                       what: str) -> T:
        channel = self._open(op, params)
        return decode(await self._answer(channel, channel.result, op, timeout), kind, what)

    async def _answer(self, channel: Channel, future: asyncio.Future[T], op: str,
                      timeout: float) -> T:
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            channel.abort()
            raise Unavailable(f"the guest agent did not answer {op} within {timeout:g}s") from None
        except BaseException:
            if not future.done():
                channel.abort()
            raise

    def _open(self, op: str, params: dict[str, Any], streams: Sequence[int] = ()) -> Channel:
        if not self._ready:
            self._raise_if_lost()
            raise Unavailable("the agent session is not established; call hello() first")
        channel = Channel(self, self._next_id, streams, self.window)
        self._next_id = self._next_id % 0xFFFFFFFF + 1
        self._channels[channel.id] = channel
        self._write(proto.encode_json(proto.OPEN, channel.id, {"op": op, "params": params}))
        return channel

    def _ended(self, channel: Channel) -> None:
        """A channel got its answer or failed; it stays known until the agent's CLOSE."""
        if self._channels.get(channel.id) is not channel:
            return
        self._unclosed.add(channel.id)
        if len(self._unclosed) > MAX_UNCLOSED:
            self._broken(f"{len(self._unclosed)} ended channels never closed")

    def _forget(self, channel_id: int) -> None:
        self._channels.pop(channel_id, None)
        self._unclosed.discard(channel_id)

    def _raise_if_lost(self) -> None:
        if self._lost is not None:
            raise self._lost

    def _write(self, frame: bytes) -> None:
        self._raise_if_lost()
        self._writer.write(frame)

    async def _drain(self) -> None:
        try:
            await self._writer.drain()
        except (ConnectionError, OSError) as e:
            self._connection_lost(Unavailable(f"lost the connection to the guest agent: {e}"))
            self._raise_if_lost()

    async def _read_loop(self) -> None:
        reason = "the guest agent closed the connection"
        try:
            while self._lost is None and (data := await self._reader.read(READ_SIZE)):
                self.feed(data)
        except (ConnectionError, OSError) as e:
            reason = f"lost the connection to the guest agent: {e}"
        finally:
            self._connection_lost(Unavailable(reason))

    def feed(self, data: bytes) -> None:
        """Handle bytes the agent sent (the read loop calls this)."""
        for item in self._decoder.feed(data):
            if self._lost is not None:
                return
            self._dispatch(item)

    def _dispatch(self, item: proto.Frame | proto.OversizedFrame) -> None:
        if isinstance(item, proto.Frame) and item.type == proto.HELLO_ACK:
            self._on_hello_ack(item)
            return
        if not self._ready:
            return  # stale frames from before our hello
        channel = self._channels.get(item.channel)
        if isinstance(item, proto.OversizedFrame):
            self._violation(channel, item.channel, f"a frame of {item.length} bytes, over the "
                                                   f"{proto.MAX_PAYLOAD >> 20} MiB limit")
        elif item.type == proto.DATA:
            if channel is None or not channel.on_data(item):
                self._violation(channel, item.channel, "more data than the window allows")
        elif channel is None:
            return  # answers for channels the agent already closed
        elif item.type == proto.CLOSE:
            channel.fail(OperationFailed("the guest agent closed the channel without an answer"))
            self._forget(item.channel)
        elif not channel.finished:
            try:
                channel.on_frame(item)
            except BangerError as e:
                channel.abort(e)

    def _violation(self, channel: Channel | None, channel_id: int, what: str) -> None:
        """Fail the open channel the frame belongs to, else the whole connection."""
        if channel is not None and not channel.finished:
            channel.abort(OperationFailed(f"the guest agent sent {what} on its channel; "
                                          "the request was stopped"))
            channel.recv_credit = STOP_GRACE  # dropped as it comes; beyond it the link goes
        elif channel is not None:
            self._broken(f"{what} on channel {channel_id} after it ended")
        else:
            self._broken(f"{what} on channel {channel_id}, which is not open")

    def _broken(self, what: str) -> None:
        """The agent broke the protocol where no channel can take the blame: drop the link."""
        self._connection_lost(Unavailable(f"the guest agent broke the protocol ({what}); "
                                          "the connection was dropped and reopens on next use"))
        self._writer.close()

    def _on_hello_ack(self, frame: proto.Frame) -> None:
        hello = self._hello
        if hello is None or hello[1].done():
            return
        try:
            if decode(frame.payload, HelloNonce, "hello answer").nonce != hello[0]:
                return  # an answer to an earlier hello, still in the pipe
            ack = decode(frame.payload, HelloAck, "hello answer")
        except OperationFailed as e:
            hello[1].set_exception(e)
            return
        self._ready = True
        self.window = min(ack.window, proto.LARGE_WINDOW)  # never more than we asked for
        hello[1].set_result(ack)

    def _connection_lost(self, error: BangerError) -> None:
        if self._lost is None:
            self._lost = error
        self._fail_all(error)
        if self._hello is not None and not self._hello[1].done():
            self._hello[1].set_exception(error)

    def _fail_all(self, error: BaseException) -> None:
        channels, self._channels = list(self._channels.values()), {}
        self._unclosed = set()
        for channel in channels:
            channel.fail(error)


async def connect_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                         timeout: float) -> AgentClient:
    """Say hello over an open byte stream (any transport: Unix socket, hybrid vsock...)."""
    client = AgentClient(reader, writer)
    try:
        await client.hello(timeout=timeout)
    except BaseException:
        await client.close()
        raise
    return client


async def connect_unix(path: Path, *, timeout: float) -> AgentClient:
    """Connect to an agent's Unix socket (QEMU's chardev or --unix) and say hello."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), timeout)
    except (TimeoutError, OSError) as e:
        raise Unavailable(f"cannot connect to the guest agent at {path}: {e}") from None
    return await connect_stream(reader, writer, timeout=max(deadline - loop.time(), 0.1))
