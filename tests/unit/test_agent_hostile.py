"""A replacement guest agent that speaks the protocol with hostile frames, against the real client.

Root in a guest can swap the agent for anything; the daemon must answer every such peer with one
clear banger error on the channel concerned, bounded memory, and (where the protocol allows) a
connection that still serves the next request.
"""

from __future__ import annotations

import asyncio
import json
import socket
import tracemalloc
import zlib
from collections.abc import Awaitable, Callable, Coroutine
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from banger.agent.client import OUTPUT_CAP, AgentClient
from banger.daemon.guest_ports import ports_of
from banger.errors import BangerError, OperationFailed, Unavailable
from banger.guest.agent import protocol as proto

MiB = 1024 * 1024
FLOOD = 48 * MiB  # far past every cap, small enough to send in well under a second
MEMORY_BOUND = 8 * MiB  # what the client may hold while a guest floods it

pytestmark = pytest.mark.timeout(60)

Behaviour = Callable[["HostileAgent", int, dict[str, Any]], Coroutine[Any, Any, None]]
HEALTH = {"ok": True, "version": "hostile", "protocol": 1, "uptime": 1.0, "pid1": False}


class HostileAgent:
    """Answers hello and health like the real agent; every other op runs a test's behaviour."""

    def __init__(self, behaviours: dict[str, Behaviour]) -> None:
        self.behaviours = behaviours
        self.granted: dict[int, int] = {}  # WINDOW credit the host gave, per channel
        self.host_closed: set[int] = set()  # channels the host aborted
        self.credit = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.writer: asyncio.StreamWriter | None = None

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        decoder = proto.FrameDecoder()
        while data := await reader.read(65536):
            for frame in decoder.feed(data):
                assert isinstance(frame, proto.Frame)
                self.on_frame(frame)

    def on_frame(self, frame: proto.Frame) -> None:
        if frame.type == proto.HELLO:
            self.send(proto.encode_json(proto.HELLO_ACK, 0, {
                "version": 1, "nonce": frame.json()["nonce"], "agent_version": "hostile",
                "pid1": False}))
        elif frame.type == proto.OPEN:
            request = frame.json()
            behaviour = self.behaviours.get(request["op"], answer(HEALTH))
            self.tasks.append(asyncio.create_task(behaviour(self, frame.channel, request["params"])))
        elif frame.type == proto.WINDOW:
            self.granted[frame.channel] = (self.granted.get(frame.channel, 0)
                                           + proto.decode_window(frame.payload))
            self.credit.set()
        elif frame.type == proto.CLOSE:
            self.host_closed.add(frame.channel)
            self.send(proto.encode_frame(proto.CLOSE, frame.channel))

    def send(self, frame: bytes) -> None:
        assert self.writer is not None
        self.writer.write(frame)

    async def drain(self) -> None:
        assert self.writer is not None
        await self.writer.drain()

    async def flood(self, channel: int, stream: int, total: int, *,
                    heed_close: bool = True) -> None:
        """DATA with no regard for the window the host granted (until told to stop)."""
        chunk = b"x" * proto.DATA_CHUNK
        for _ in range(total // len(chunk)):
            if heed_close and channel in self.host_closed:
                return
            self.send(proto.encode_frame(proto.DATA, channel, chunk, stream))
            await self.drain()

    async def send_within_window(self, channel: int, stream: int, total: int) -> None:
        """DATA exactly as the protocol allows: never past the credit the host granted."""
        sent, chunk = 0, b"y" * proto.DATA_CHUNK
        while sent < total and channel not in self.host_closed:
            if sent + len(chunk) > proto.INITIAL_WINDOW + self.granted.get(channel, 0):
                self.credit.clear()
                await self.credit.wait()
                continue
            self.send(proto.encode_frame(proto.DATA, channel, chunk, stream))
            sent += len(chunk)
            await self.drain()

    def finish(self, channel: int, result: dict[str, Any]) -> None:
        self.send(proto.encode_json(proto.RESULT, channel, result))
        self.send(proto.encode_frame(proto.CLOSE, channel))


def answer(result: dict[str, Any]) -> Behaviour:
    async def behaviour(agent: HostileAgent, channel: int, params: dict[str, Any]) -> None:
        agent.finish(channel, result)

    return behaviour


def started(pid: Any = 4242, then: Behaviour | None = None) -> Behaviour:
    """An exec that reports `pid`, runs `then`, and exits 0."""

    async def behaviour(agent: HostileAgent, channel: int, params: dict[str, Any]) -> None:
        agent.send(proto.encode_json(proto.CONTROL, channel, {"event": "started", "pid": pid}))
        if then is not None:
            await then(agent, channel, params)
        for stream in (proto.STDOUT, proto.STDERR):
            agent.send(proto.encode_frame(proto.EOF, channel, b"", stream))
        agent.finish(channel, {"exit_code": 0, "signal": None})

    return behaviour


def run(behaviours: dict[str, Behaviour],
        scenario: Callable[[AgentClient, HostileAgent], Awaitable[None]]) -> None:
    async def main() -> None:
        ours, theirs = socket.socketpair()
        agent = HostileAgent(behaviours)
        agent_reader, agent_writer = await asyncio.open_connection(sock=theirs)
        server = asyncio.create_task(agent.serve(agent_reader, agent_writer))
        reader, writer = await asyncio.open_connection(sock=ours)
        client = AgentClient(reader, writer)
        try:
            await client.hello(timeout=5)
            await scenario(client, agent)
        finally:
            await client.close()
            server.cancel()
            for task in agent.tasks:
                task.cancel()
            agent_writer.close()

    asyncio.run(main())


async def peak_memory_of(work: Awaitable[Any]) -> tuple[Any, int]:
    """(what work returned or raised, the peak bytes Python allocated meanwhile)."""
    tracemalloc.start()
    try:
        try:
            outcome: Any = await work
        except BangerError as e:
            outcome = e
        return outcome, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --------------------------------------------------------------------------- flow control


def test_data_past_the_window_fails_the_channel_with_memory_flat() -> None:
    async def flood_stdout(agent: HostileAgent, channel: int, params: dict[str, Any]) -> None:
        await agent.flood(channel, proto.STDOUT, FLOOD)

    async def scenario(client: AgentClient, agent: HostileAgent) -> None:
        proc = await client.exec(["cat", "/dev/zero"])  # nobody reads its output
        outcome, peak = await peak_memory_of(proc.wait())
        assert isinstance(outcome, OperationFailed), outcome
        assert "window" in str(outcome) and "\n" not in str(outcome)
        assert peak < MEMORY_BOUND
        assert (await client.health()).ok  # other channels go on
        assert proc._channel.id in agent.host_closed  # the guest was told to stop

    run({"exec": started(then=flood_stdout)}, scenario)


def test_data_on_a_stream_nobody_reads_is_dropped_and_counts_against_the_window() -> None:
    async def flood_stream_9(agent: HostileAgent, channel: int, params: dict[str, Any]) -> None:
        await agent.flood(channel, 9, FLOOD)

    async def scenario(client: AgentClient, agent: HostileAgent) -> None:
        proc = await client.exec(["true"])
        outcome, peak = await peak_memory_of(proc.communicate())
        assert isinstance(outcome, OperationFailed) and "window" in str(outcome), outcome
        assert peak < MEMORY_BOUND
        assert (await client.health()).ok

    run({"exec": started(then=flood_stream_9)}, scenario)


def test_stray_bytes_on_a_stream_nobody_reads_are_not_kept() -> None:
    async def a_little_on_stream_9(agent: HostileAgent, channel: int,
                                   params: dict[str, Any]) -> None:
        agent.send(proto.encode_frame(proto.DATA, channel, b"z" * 1000, 9))
        agent.send(proto.encode_frame(proto.DATA, channel, b"hi", proto.STDOUT))

    async def scenario(client: AgentClient, agent: HostileAgent) -> None:
        proc = await client.exec(["true"])
        out, err, status = await proc.communicate()
        assert (out, err, status.code) == (b"hi", b"", 0)

    run({"exec": started(then=a_little_on_stream_9)}, scenario)


def test_data_for_a_channel_never_opened_fails_the_connection() -> None:
    async def flood_elsewhere(agent: HostileAgent, channel: int, params: dict[str, Any]) -> None:
        await agent.flood(channel + 1000, proto.STDOUT, FLOOD)

    async def scenario(client: AgentClient, agent: HostileAgent) -> None:
        proc = await client.exec(["true"])
        outcome, peak = await peak_memory_of(proc.wait())
        assert isinstance(outcome, Unavailable), outcome
        assert "not open" in str(outcome)
        assert peak < MEMORY_BOUND
        assert not client.connected  # the pool reconnects (and says hello) on the next request

    run({"exec": started(then=flood_elsewhere)}, scenario)


def test_data_that_goes_on_after_close_fails_the_connection() -> None:
    async def keep_sending(agent: HostileAgent, channel: int, params: dict[str, Any]) -> None:
        while channel not in agent.host_closed:
            await asyncio.sleep(0.01)
        await agent.flood(channel, proto.STDOUT, FLOOD, heed_close=False)

    async def until_disconnected(client: AgentClient) -> None:
        while client.connected:
            await asyncio.sleep(0.01)

    async def scenario(client: AgentClient, agent: HostileAgent) -> None:
        proc = await client.exec(["sleep", "100"])
        proc.kill()
        _, peak = await peak_memory_of(until_disconnected(client))
        assert peak < MEMORY_BOUND
        with pytest.raises(Unavailable, match=r"broke the protocol \(more data than the window "
                                              r"allows on channel 1, which is not open\)"):
            await client.health()

    run({"exec": started(then=keep_sending)}, scenario)


def test_a_frame_over_the_size_limit_fails_its_channel_only() -> None:
    async def giant(agent: HostileAgent, channel: int, params: dict[str, Any]) -> None:
        header = bytearray(proto.encode_frame(proto.RESULT, channel, b""))
        header[10:14] = (proto.MAX_PAYLOAD + 1).to_bytes(4, "big")
        header[14:18] = zlib.crc32(bytes(header[:14])).to_bytes(4, "big")
        agent.send(bytes(header) + b"{" * (proto.MAX_PAYLOAD + 1))

    async def scenario(client: AgentClient, agent: HostileAgent) -> None:
        outcome, peak = await peak_memory_of(client.info())
        assert isinstance(outcome, OperationFailed) and "limit" in str(outcome), outcome
        assert peak < MEMORY_BOUND
        assert (await client.health()).ok

    run({"info": giant}, scenario)


# --------------------------------------------------------------------------- output caps


def test_endless_output_within_the_window_stops_at_the_output_cap() -> None:
    async def endless(agent: HostileAgent, channel: int, params: dict[str, Any]) -> None:
        await agent.send_within_window(channel, proto.STDOUT, 3 * OUTPUT_CAP)

    async def scenario(client: AgentClient, agent: HostileAgent) -> None:
        proc = await client.exec(["yes"])
        outcome, peak = await peak_memory_of(proc.communicate())
        assert isinstance(outcome, OperationFailed), outcome
        assert f"over the {OUTPUT_CAP // MiB} MiB cap" in str(outcome)
        assert peak < 3 * OUTPUT_CAP  # the guest sent 3 caps' worth
        assert (await client.health()).ok
        assert proc._channel.id in agent.host_closed  # the command was killed

    run({"exec": started(then=endless)}, scenario)


def test_endless_tar_stream_stops_at_the_callers_cap() -> None:
    async def endless_tar(agent: HostileAgent, channel: int, params: dict[str, Any]) -> None:
        await agent.send_within_window(channel, proto.TAR, 8 * MiB)
        agent.finish(channel, {"bytes": 8 * MiB})

    async def scenario(client: AgentClient, agent: HostileAgent) -> None:
        got = 0
        with pytest.raises(OperationFailed, match="over the 2 MiB cap"):
            async for chunk in client.get("/root/out", max_bytes=2 * MiB):
                got += len(chunk)
        assert got <= 2 * MiB
        assert (await client.health()).ok

    run({"get": endless_tar}, scenario)


# --------------------------------------------------------------------------- typed results


def exec_result(result: dict[str, Any]) -> Behaviour:
    async def behaviour(agent: HostileAgent, channel: int, params: dict[str, Any]) -> None:
        agent.send(proto.encode_json(proto.CONTROL, channel, {"event": "started", "pid": 7}))
        agent.finish(channel, result)

    return behaviour


@pytest.mark.parametrize("result", [
    {"exit_code": "3", "signal": None},
    {"exit_code": 256, "signal": None},
    {"exit_code": -1, "signal": None},
    {"exit_code": None, "signal": 0},
    {"exit_code": None, "signal": None},
    {"exit_code": 0, "signal": 9},
    {"exit_code": 1.5, "signal": None},
    {},
], ids=str)
def test_a_malformed_exit_status_is_one_clear_error(result: dict[str, Any]) -> None:
    async def scenario(client: AgentClient, agent: HostileAgent) -> None:
        proc = await client.exec(["true"])
        with pytest.raises(OperationFailed, match=r"^the guest agent sent an invalid exit status: "):
            await proc.wait()
        assert (await client.health()).ok

    run({"exec": exec_result(result)}, scenario)


@pytest.mark.parametrize("pid", ["abc", -5, 0, None, 2**40, "12"], ids=repr)
def test_a_malformed_pid_is_one_clear_error(pid: Any) -> None:
    async def scenario(client: AgentClient, agent: HostileAgent) -> None:
        with pytest.raises(OperationFailed, match=r"^the guest agent sent an invalid start event: "):
            await client.exec(["true"])
        assert (await client.health()).ok

    run({"exec": started(pid)}, scenario)


GOOD_PORT = {"proto": "tcp", "address": "0.0.0.0", "port": 22, "pid": 100, "process": "sshd"}


@pytest.mark.parametrize("entry", [
    {**GOOD_PORT, "port": 70000},
    {**GOOD_PORT, "port": 0},
    {**GOOD_PORT, "port": "22"},
    {**GOOD_PORT, "pid": "x"},
    {**GOOD_PORT, "proto": "sctp"},
    {**GOOD_PORT, "address": "\x1b[31mred"},
    {**GOOD_PORT, "process": "p" * 10_000},
    {"port": 22},
], ids=lambda e: json.dumps(e)[:60])
def test_a_malformed_ports_entry_is_one_clear_error(entry: dict[str, Any]) -> None:
    async def scenario(client: AgentClient, agent: HostileAgent) -> None:
        with pytest.raises(OperationFailed, match=r"^the guest agent sent an invalid ports list: "):
            await client.ports()
        assert (await client.health()).ok

    run({"ports": answer({"ports": [GOOD_PORT, entry]})}, scenario)


def test_a_ports_entry_cannot_override_the_vm_name() -> None:
    sneaky = {**GOOD_PORT, "address": "127.0.0.1", "vm": "someone-else",
              "endpoint": "evil.vm:1", "process": "\x1b]0;owned\x07sshd"}

    async def scenario(client: AgentClient, agent: HostileAgent) -> None:
        vm = SimpleNamespace(id="id-1", name="mine", net_mode="user")

        async def agent_for(ref: str) -> tuple[Any, AgentClient]:
            return vm, client

        mgr = SimpleNamespace(agent_for=agent_for, net=SimpleNamespace(
            endpoint=lambda vm: SimpleNamespace(host="10.0.2.15", netns="", ssh_port=2222)))
        rows = await ports_of(mgr, vm)  # type: ignore[arg-type]
        assert msgspec.to_builtins(rows) == [
            {"vm": "mine", "proto": "tcp", "address": "127.0.0.1", "port": 22, "pid": 100,
             "process": "]0;ownedsshd", "endpoint": None, "http": False}]

    run({"ports": answer({"ports": [sneaky]})}, scenario)


def test_a_malformed_health_or_info_answer_is_one_clear_error() -> None:
    async def scenario(client: AgentClient, agent: HostileAgent) -> None:
        with pytest.raises(OperationFailed, match=r"^the guest agent sent an invalid info answer: "):
            await client.info()
        assert (await client.health()).ok

    run({"info": answer({"hostname": ["x"], "kernel": 5})}, scenario)


def test_an_agent_error_message_is_cleaned_and_capped() -> None:
    async def fail(agent: HostileAgent, channel: int, params: dict[str, Any]) -> None:
        agent.send(proto.encode_json(proto.ERROR, channel, {
            "code": "failed", "message": "\x1b]0;owned\x07boom\nsecond line" + "!" * 10_000}))
        agent.send(proto.encode_frame(proto.CLOSE, channel))

    async def scenario(client: AgentClient, agent: HostileAgent) -> None:
        with pytest.raises(OperationFailed) as caught:
            await client.info()
        message = str(caught.value)
        assert "\x1b" not in message and "\x07" not in message and "\n" not in message
        assert "boom | second line" in message and len(message) < 1000

    run({"info": fail}, scenario)


def test_a_deeply_nested_answer_is_one_clear_error() -> None:
    async def nested(agent: HostileAgent, channel: int, params: dict[str, Any]) -> None:
        agent.send(proto.encode_frame(proto.RESULT, channel, b"[" * 500_000))
        agent.send(proto.encode_frame(proto.CLOSE, channel))

    async def scenario(client: AgentClient, agent: HostileAgent) -> None:
        with pytest.raises(OperationFailed, match=r"^the guest agent sent an invalid info answer: "):
            await client.info()
        assert (await client.health()).ok

    run({"info": nested}, scenario)


@pytest.mark.parametrize("ack", [{"version": 1, "agent_version": "x", "pid1": "yes"},
                                 {"version": "1", "agent_version": "x", "pid1": False}], ids=str)
def test_a_malformed_hello_answer_is_one_clear_error(ack: dict[str, Any]) -> None:
    async def main() -> None:
        ours, theirs = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=ours)
        client = AgentClient(reader, writer)
        agent_reader, agent_writer = await asyncio.open_connection(sock=theirs)
        hello = asyncio.create_task(client.hello(timeout=5))
        frame = proto.FrameDecoder().feed(await agent_reader.read(4096))[0]
        assert isinstance(frame, proto.Frame)
        agent_writer.write(proto.encode_json(proto.HELLO_ACK, 0,
                                             {**ack, "nonce": frame.json()["nonce"]}))
        with pytest.raises(OperationFailed, match=r"^the guest agent sent an invalid hello answer"):
            await hello
        await client.close()
        agent_writer.close()

    asyncio.run(main())
