"""Host side of the agent protocol: one asyncio connection multiplexing many requests."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from banger.agent import protocol as proto
from banger.errors import BangerError, OperationFailed, Unavailable

READ_SIZE = 256 * 1024
HELLO_RESEND_SECONDS = 1.0  # the agent may still be booting when we first say hello


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


def _silence(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen: nobody may ever await a failed channel."""
    if not future.cancelled():
        future.exception()


class _Channel:
    """Host-side state of one request."""

    def __init__(self, client: AgentClient, channel_id: int) -> None:
        loop = asyncio.get_running_loop()
        self.client = client
        self.id = channel_id
        self.result: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.started: asyncio.Future[dict[str, Any]] = loop.create_future()
        for future in (self.result, self.started):
            future.add_done_callback(_silence)
        self.failure: BaseException | None = None
        self.send_credit = proto.INITIAL_WINDOW
        self.credit_changed = asyncio.Event()
        self._streams: dict[int, asyncio.Queue[bytes | None]] = {}

    def stream(self, stream_id: int) -> asyncio.Queue[bytes | None]:
        return self._streams.setdefault(stream_id, asyncio.Queue())

    def on_frame(self, frame: proto.Frame) -> None:
        if frame.type == proto.DATA:
            self.stream(frame.stream).put_nowait(frame.payload)
        elif frame.type == proto.EOF:
            self.stream(frame.stream).put_nowait(None)
        elif frame.type == proto.WINDOW:
            self.send_credit += proto.decode_window(frame.payload)
            self.credit_changed.set()
        elif frame.type == proto.CONTROL:
            event = frame.json()
            if event.get("event") == "started" and not self.started.done():
                self.started.set_result(event)
        elif frame.type == proto.RESULT:
            if not self.result.done():
                self.result.set_result(frame.json())
            self._end_streams()
        elif frame.type == proto.ERROR:
            error = frame.json()
            message = str(error.get("message", "agent error"))
            self.fail(OperationFailed(message, agent_code=error.get("code")))
        elif frame.type == proto.CLOSE:
            self.fail(OperationFailed("the agent closed the channel without an answer"))
            self.client._forget(self)

    def fail(self, error: BaseException) -> None:
        if self.result.done():
            return
        self.failure = error
        self.result.set_exception(error)
        if not self.started.done():
            self.started.set_exception(error)
        self.credit_changed.set()
        self._end_streams()

    def _end_streams(self) -> None:
        for queue in self._streams.values():
            queue.put_nowait(None)

    def raise_if_failed(self) -> None:
        if self.failure is not None:
            raise self.failure

    async def send(self, stream_id: int, data: bytes) -> None:
        """Send data as the agent's window allows; dropped if the request already ended."""
        view = memoryview(data)
        while view:
            self.raise_if_failed()
            if self.result.done():
                return
            if self.send_credit <= 0:
                self.credit_changed.clear()
                await self.credit_changed.wait()
                continue
            amount = min(len(view), self.send_credit, proto.DATA_CHUNK)
            self.client._write(proto.encode_frame(proto.DATA, self.id, bytes(view[:amount]),
                                                  stream_id))
            self.send_credit -= amount
            view = view[amount:]
            await self.client._drain()

    def send_eof(self, stream_id: int) -> None:
        self._write_while_open(proto.encode_frame(proto.EOF, self.id, b"", stream_id))

    def send_control(self, message: dict[str, Any]) -> None:
        self._write_while_open(proto.encode_json(proto.CONTROL, self.id, message))

    def grant(self, amount: int) -> None:
        self._write_while_open(proto.encode_window(self.id, amount))

    def _write_while_open(self, frame: bytes) -> None:
        """Once the request has ended the agent has forgotten the channel: drop the frame."""
        if not self.result.done():
            self.client._write(frame)

    def abort(self) -> None:
        """Tell the agent to drop this request (kills its process)."""
        if not self.result.done():
            self.fail(OperationFailed("request aborted"))
            with contextlib.suppress(BangerError):
                self.client._write(proto.encode_frame(proto.CLOSE, self.id))
        self.client._forget(self)


class OutputStream:
    """One output stream of a request; reading gives the agent more window."""

    def __init__(self, channel: _Channel, stream_id: int) -> None:
        self._channel = channel
        self._queue = channel.stream(stream_id)
        self._eof = False

    async def read(self) -> bytes:
        """The next chunk, or b"" at end of stream; raises if the request failed."""
        if self._eof:
            return b""
        chunk = await self._queue.get()
        if chunk is None:
            self._eof = True
            self._channel.raise_if_failed()
            return b""
        self._channel.grant(len(chunk))
        return chunk

    async def read_all(self) -> bytes:
        return b"".join([chunk async for chunk in self])

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        while chunk := await self.read():
            yield chunk


class AgentProcess:
    """A command running in the guest, shaped like asyncio's Process."""

    def __init__(self, channel: _Channel, pid: int) -> None:
        self._channel = channel
        self.pid = pid
        self.stdout = OutputStream(channel, proto.STDOUT)
        self.stderr = OutputStream(channel, proto.STDERR)

    async def write(self, data: bytes) -> None:
        await self._channel.send(proto.STDIN, data)

    async def close_stdin(self) -> None:
        self._channel.send_eof(proto.STDIN)
        await self._channel.client._drain()

    def resize(self, rows: int, cols: int) -> None:
        self._channel.send_control({"type": "resize", "rows": rows, "cols": cols})

    def signal(self, signum: int) -> None:
        self._channel.send_control({"type": "signal", "signal": int(signum)})

    async def wait(self) -> ExitStatus:
        """Exit status; keep reading stdout/stderr meanwhile or the command stalls."""
        result = await self._channel.result
        return ExitStatus(code=result.get("exit_code"), signal=result.get("signal"))

    async def communicate(self, data: bytes | None = None) -> tuple[bytes, bytes, ExitStatus]:
        """Feed stdin (if it was requested) and collect all output."""

        async def feed() -> None:
            if data:
                await self.write(data)
            await self.close_stdin()

        jobs: list[Any] = [self.stdout.read_all(), self.stderr.read_all()]
        if data is not None:
            jobs.append(feed())
        outputs = await asyncio.gather(*jobs)
        return outputs[0], outputs[1], await self.wait()

    def kill(self) -> None:
        """Abort the request; the agent kills the whole process group."""
        self._channel.abort()


class AgentClient:
    """One connection to a guest agent; call hello() before anything else."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._decoder = proto.FrameDecoder()
        self._channels: dict[int, _Channel] = {}
        self._next_id = 1
        self._read_task: asyncio.Task[None] | None = None
        self._hello: tuple[str, asyncio.Future[dict[str, Any]]] | None = None
        self._ready = False
        self._lost: BangerError | None = None

    @property
    def connected(self) -> bool:
        """False once the connection dropped or the client was closed."""
        return self._lost is None

    # ---- session

    async def hello(self, timeout: float = 10.0) -> dict[str, Any]:
        """Reset the agent's session (aborting our old requests) and wait for its answer."""
        if self._read_task is None:
            self._read_task = asyncio.create_task(self._read_loop())
        self._ready = False
        self._fail_all(Unavailable("the agent session was reset"))
        nonce = secrets.token_hex(8)
        answered: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        answered.add_done_callback(_silence)
        self._hello = (nonce, answered)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not answered.done():
            self._write(proto.encode_json(proto.HELLO, proto.SESSION_CHANNEL,
                                          {"version": proto.PROTOCOL_VERSION, "nonce": nonce}))
            await self._drain()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise Unavailable(f"the guest agent did not answer hello within {timeout:g}s")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(answered),
                                       min(remaining, HELLO_RESEND_SECONDS))
        ack = answered.result()
        self._ready = True
        return ack

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

    async def health(self, timeout: float = 5.0) -> dict[str, Any]:
        """{ok, version, protocol, uptime, pid1}"""
        return await self._request("health", {}, timeout)

    async def info(self, timeout: float = 10.0) -> dict[str, Any]:
        """{hostname, kernel, arch, os_release, cpus, memory, python, systemd, ...}"""
        return await self._request("info", {}, timeout)

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
    ) -> dict[str, Any]:
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
        return await self._request("configure", params, timeout)

    async def ports(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Listening sockets: [{proto, address, port, pid, process}]."""
        answer = await self._request("ports", {}, timeout)
        return list(answer["ports"])

    async def poweroff(self, timeout: float = 10.0) -> None:
        """The agent answers, then powers the guest off in the background."""
        await self._request("poweroff", {}, timeout)

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
        channel = self._open("exec", params)
        event = await self._answer(channel, channel.started, "exec", timeout)
        return AgentProcess(channel, int(event.get("pid", 0)))

    async def put(
        self, dest: str, tar_chunks: AsyncIterable[bytes], *, timeout: float = 60.0
    ) -> dict[str, Any]:
        """Extract a tar stream under the guest directory dest (created if missing)."""
        channel = self._open("put", {"dest": dest})
        try:
            async for chunk in tar_chunks:
                await channel.send(proto.TAR, chunk)
                if channel.result.done():
                    break  # the agent refused the stream; its error is in the result
            channel.send_eof(proto.TAR)
        except BaseException:
            channel.abort()
            raise
        return await self._answer(channel, channel.result, "put", timeout)

    async def get(self, path: str) -> AsyncIterator[bytes]:
        """A tar stream of the guest path (its top entry is the path's basename)."""
        channel = self._open("get", {"path": path})
        stream = OutputStream(channel, proto.TAR)
        try:
            while chunk := await stream.read():
                yield chunk
            await channel.result
        finally:
            if not channel.result.done():
                channel.abort()

    # ---- plumbing

    async def _request(self, op: str, params: dict[str, Any], timeout: float) -> dict[str, Any]:
        channel = self._open(op, params)
        return await self._answer(channel, channel.result, op, timeout)

    async def _answer(
        self,
        channel: _Channel,
        future: asyncio.Future[dict[str, Any]],
        op: str,
        timeout: float,
    ) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            channel.abort()
            raise Unavailable(f"the guest agent did not answer {op} within {timeout:g}s") from None
        except BaseException:
            if not future.done():
                channel.abort()
            raise

    def _open(self, op: str, params: dict[str, Any]) -> _Channel:
        if not self._ready:
            self._raise_if_lost()
            raise Unavailable("the agent session is not established; call hello() first")
        channel = _Channel(self, self._next_id)
        self._next_id = self._next_id % 0xFFFFFFFF + 1
        self._channels[channel.id] = channel
        self._write(proto.encode_json(proto.OPEN, channel.id, {"op": op, "params": params}))
        return channel

    def _forget(self, channel: _Channel) -> None:
        if self._channels.get(channel.id) is channel:
            del self._channels[channel.id]

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
            while data := await self._reader.read(READ_SIZE):
                for item in self._decoder.feed(data):
                    self._dispatch(item)
        except (ConnectionError, OSError) as e:
            reason = f"lost the connection to the guest agent: {e}"
        finally:
            self._connection_lost(Unavailable(reason))

    def _dispatch(self, item: proto.Frame | proto.OversizedFrame) -> None:
        if isinstance(item, proto.OversizedFrame):
            channel = self._channels.get(item.channel)
            if channel is not None:
                channel.fail(OperationFailed(f"the agent sent an oversized frame ({item.length})"))
            return
        if item.type == proto.HELLO_ACK:
            self._on_hello_ack(item)
            return
        channel = self._channels.get(item.channel)
        if not self._ready or channel is None:
            return  # stale frames from before our hello, or for aborted requests
        try:
            channel.on_frame(item)
        except proto.ProtocolError as e:
            channel.fail(OperationFailed(f"malformed frame from the agent: {e}"))

    def _on_hello_ack(self, frame: proto.Frame) -> None:
        with contextlib.suppress(proto.ProtocolError):
            ack = frame.json()
            hello = self._hello
            if hello is not None and ack.get("nonce") == hello[0] and not hello[1].done():
                hello[1].set_result(ack)

    def _connection_lost(self, error: BangerError) -> None:
        if self._lost is None:
            self._lost = error
        self._fail_all(error)
        if self._hello is not None and not self._hello[1].done():
            self._hello[1].set_exception(error)

    def _fail_all(self, error: BaseException) -> None:
        channels, self._channels = list(self._channels.values()), {}
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
