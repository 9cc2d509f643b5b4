"""Property tests: the frame decoder and the client state machine against arbitrary guest bytes."""

from __future__ import annotations

import asyncio
import itertools
import json
import zlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from banger.agent.client import MAX_UNCLOSED, AgentClient
from banger.agent.process import AgentProcess
from banger.errors import BangerError
from banger.guest.agent import protocol as proto

pytestmark = pytest.mark.fuzz


def header_claiming(ftype: int, channel: int, length: int, stream: int = 0) -> bytes:
    """A valid header (good magic and CRC) announcing length payload bytes."""
    head = bytearray(proto.encode_frame(ftype, channel, b"", stream))
    head[10:14] = length.to_bytes(4, "big")
    head[14:18] = zlib.crc32(bytes(head[:14])).to_bytes(4, "big")
    return bytes(head)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


# --------------------------------------------------------------------------- decoder

frames = st.builds(
    proto.encode_frame,
    st.integers(0, 255), st.integers(0, 2**32 - 1), st.binary(max_size=200), st.integers(0, 255))
segments = st.one_of(
    frames,
    st.binary(max_size=100),  # garbage
    st.builds(header_claiming, st.integers(0, 255), st.integers(0, 2**32 - 1),
              st.integers(0, 2**32 - 1)),
    st.just(proto.MAGIC),
)


@given(st.lists(segments, max_size=30), st.lists(st.integers(0, 10_000), max_size=20),
       st.sampled_from([0, 64, 1024, proto.MAX_PAYLOAD]))
def test_decoder_takes_any_bytes_and_keeps_at_most_one_frame(
        parts: list[bytes], cuts: list[int], max_payload: int) -> None:
    decoder = proto.FrameDecoder(max_payload=max_payload)
    for piece in split(b"".join(parts), cuts):
        for item in decoder.feed(piece):
            if isinstance(item, proto.Frame):
                assert len(item.payload) <= max_payload
            else:
                assert isinstance(item, proto.OversizedFrame) and item.length > max_payload
        assert decoder.buffered < proto.HEADER_SIZE + max_payload


@given(st.lists(frames, max_size=20), st.lists(st.integers(0, 10_000), max_size=20))
def test_decoder_recovers_every_frame_however_the_stream_is_cut(
        wire_frames: list[bytes], cuts: list[int]) -> None:
    decoder = proto.FrameDecoder()
    got = []
    for piece in split(b"".join(wire_frames), cuts):
        got += decoder.feed(piece)
    expected = [item for frame in wire_frames for item in proto.FrameDecoder().feed(frame)]
    assert [(f.type, f.channel, f.stream, f.payload) for f in got] == [  # type: ignore[union-attr]
        (f.type, f.channel, f.stream, f.payload) for f in expected]  # type: ignore[union-attr]
    assert decoder.discarded == 0


# --------------------------------------------------------------------------- client


class Wire:
    """The client's writer: keeps what the client sent, never blocks."""

    def __init__(self) -> None:
        self.sent = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.sent += data

    async def drain(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    async def wait_closed(self) -> None:
        pass


JSON_ANSWERS = [
    {"event": "started", "pid": 5}, {"event": "started", "pid": "x"}, {"event": "started"},
    {"exit_code": 0, "signal": None}, {"exit_code": "3"}, {"exit_code": None, "signal": 99},
    {"code": "failed", "message": "no\x1b[2J"}, {"code": 5}, {"bytes": 10}, {"bytes": -1},
    {"ok": True, "version": "1", "protocol": 1, "uptime": 0.5, "pid1": False}, {"ok": "yes"},
]
# Large payloads are built from an index, not generated: Hypothesis keeps what it generates.
SPECIAL = [
    *(json.dumps(answer).encode() for answer in JSON_ANSWERS),
    b"[" * 100_000, b"\x00\x00\x00\x10", b"\xff\xff\xff\xff",
    *(b"d" * (k * 60_000) for k in range(1, 6)),  # a few of these overrun the window
]
CHANNELS = [0, 1, 2, 3, 4, 99]  # 1 exec, 2 get, 3 health, 4 info, the rest never opened
hostile_specs = st.one_of(
    st.tuples(st.sampled_from(range(1, 12)), st.sampled_from(CHANNELS),
              st.one_of(st.binary(max_size=64), st.integers(0, len(SPECIAL) - 1)),
              st.sampled_from([0, 1, 2, 3, 9])),
    st.tuples(st.sampled_from([proto.DATA, proto.RESULT]), st.sampled_from(CHANNELS)),
    st.binary(max_size=40),  # garbage
)


def wire_bytes(spec: Any) -> bytes:
    if isinstance(spec, bytes):
        return spec
    if len(spec) == 2:
        return header_claiming(spec[0], spec[1], proto.MAX_PAYLOAD + 1)
    ftype, channel, payload, stream = spec
    return proto.encode_frame(ftype, channel, SPECIAL[payload] if isinstance(payload, int)
                              else payload, stream)


async def ready_client() -> tuple[AgentClient, Wire, AgentProcess, list[asyncio.Task[Any]]]:
    """A client past hello with an exec (channel 1), a get (2), a health (3) and an info (4)."""
    wire = Wire()
    client = AgentClient(asyncio.StreamReader(), wire)  # type: ignore[arg-type]
    hello = asyncio.create_task(client.hello(timeout=5))
    await asyncio.sleep(0)
    nonce = proto.FrameDecoder().feed(bytes(wire.sent))[0].json()["nonce"]  # type: ignore[union-attr]
    client.feed(proto.encode_json(proto.HELLO_ACK, 0, {"version": 1, "nonce": nonce,
                                                       "agent_version": "x", "pid1": False}))
    await hello
    starting = asyncio.create_task(client.exec(["x"]))
    await asyncio.sleep(0)
    client.feed(proto.encode_json(proto.CONTROL, 1, {"event": "started", "pid": 9}))
    proc = await starting

    async def drain_get() -> int:
        return sum([len(chunk) async for chunk in client.get("/x")])

    tasks = [asyncio.create_task(drain_get()), asyncio.create_task(client.health()),
             asyncio.create_task(client.info())]
    await asyncio.sleep(0)
    return client, wire, proc, tasks


@given(st.lists(hostile_specs, max_size=40), st.lists(st.integers(0, 2**20), max_size=8))
def test_client_survives_any_frame_sequence_with_bounded_buffers(
        specs: list[Any], cuts: list[int]) -> None:
    async def scenario() -> None:
        client, wire, proc, tasks = await ready_client()
        for piece in split(b"".join(wire_bytes(spec) for spec in specs), cuts):
            client.feed(piece)  # never raises, whatever the guest sent
            for channel in client._channels.values():
                assert channel.buffered <= proto.INITIAL_WINDOW
            assert len(client._unclosed) <= MAX_UNCLOSED
            await asyncio.sleep(0)  # let readers run, as the read loop would
        if not client.connected:
            assert wire.closed and not client._channels
        for task in tasks:
            if task.done() and not task.cancelled():
                assert task.exception() is None or isinstance(task.exception(), BangerError)
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # nothing left unretrieved
        if proc._channel.finished:
            try:
                status = await proc.wait()
            except BangerError:
                pass
            else:
                assert (status.code is None) != (status.signal is None)
        await client.close()

    asyncio.run(scenario())
