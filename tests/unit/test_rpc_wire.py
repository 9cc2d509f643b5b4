"""The request envelope: hostile lines become one bounded, one-line error of our family."""

from __future__ import annotations

import json

import pytest

import banger.daemon.handlers.system  # noqa: F401 - registers ping
from banger.daemon.oplog import current_op
from banger.daemon.server import _parse_request
from banger.errors import BadVersion, BangerError, InvalidArgument, UnknownMethod
from banger.rpc import wire


def test_deeply_nested_json_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="nested too deeply"):
        wire.decode(b"[" * 100_000)


@pytest.mark.parametrize(("request_", "error"), [
    ({"v": True, "method": "ping"}, BadVersion),  # True == 1 in Python, not on the wire
    ({"v": 1.0, "method": "ping"}, BadVersion),
    ({"v": 2, "method": "x" * 100_000}, UnknownMethod),
    ({"v": 2, "method": ["ping"]}, UnknownMethod),
    ({"v": 2, "method": "ping", "params": {"\x1b[31m" + "k" * 10_000: 1}}, InvalidArgument),
    ({"v": [[[[1]]]] * 10_000, "method": "ping"}, BadVersion),
])
def test_bad_envelopes_get_a_short_one_line_error(request_: dict[str, object],
                                                  error: type[BangerError]) -> None:
    with pytest.raises(error) as info:
        _parse_request(json.dumps(request_).encode())
    message = info.value.message
    assert len(message) < 500 and "\n" not in message and "\x1b" not in message


def test_only_a_well_formed_op_id_is_adopted() -> None:
    current_op.set("op-00000000")
    _parse_request(b'{"v":2,"method":"ping","op_id":"op-0000abcd\\n"}')
    assert current_op.get() == "op-00000000"
    _parse_request(b'{"v":2,"method":"ping","op_id":"op-0000abcd"}')
    assert current_op.get() == "op-0000abcd"


# ---- binary data frames: a line with "len", then exactly that many raw bytes


def _client_events(stream: bytes) -> tuple[list[dict[str, object]], object]:
    """What Call.events yields for a daemon that sent `stream` and hung up."""
    import socket
    import threading

    from banger.rpc.client import Call

    ours, theirs = socket.socketpair()

    def daemon() -> None:
        with theirs:
            theirs.sendall(stream)

    threading.Thread(target=daemon, daemon=True).start()  # more than a socket buffer holds
    call = Call(ours, "op-0000abcd")
    try:
        return list(call.events()), call.result
    finally:
        call.close()


def test_data_round_trips_as_raw_bytes_split_at_the_cap() -> None:
    data = bytes(range(256)) * (wire.MAX_DATA // 128) + b"tail"  # 2 MiB + 4: three frames
    pieces = wire.frames({"type": "data", "stream": "stdout"}, data)
    assert len(pieces) == 6
    stream = b"".join(bytes(p) for p in pieces) + wire.encode({"type": "result", "result": 7})
    events, result = _client_events(stream)
    assert b"".join(e["data"] for e in events) == data  # type: ignore[misc]
    assert {e["stream"] for e in events} == {"stdout"} and result == 7


@pytest.mark.parametrize("size", [-1, wire.MAX_DATA + 1, 2**64, "5", 1.0, True, None, [1]])
def test_hostile_lengths_are_refused(size: object) -> None:
    with pytest.raises(ValueError, match="data length"):
        wire.payload_length({"type": "stdin", "len": size})


def test_a_truncated_payload_is_a_closed_connection_not_a_short_read() -> None:
    from banger.errors import Unavailable

    with pytest.raises(Unavailable, match="closed the connection"):
        _client_events(b'{"type":"data","stream":"stdout","len":10}\n12345')
    with pytest.raises(Unavailable, match="closed the connection"):
        _client_events(b'{"type":"data","stream":"stdout","len":3}\nabc{"type":"res')


async def _pump(stream: bytes) -> tuple[list[dict[str, object]], BangerError | None, bool]:
    """Feed the daemon's client pump `stream`: what reached the handler, the error, cancelled?"""
    import asyncio

    from banger.daemon.context import Context
    from banger.daemon.server import _pump_client

    reader = asyncio.StreamReader(limit=wire.MAX_REQUEST_LINE)
    reader.feed_data(stream)
    reader.feed_eof()
    ctx = Context(None, "op-0000abcd", "vm.exec", None, inbox=asyncio.Queue())  # type: ignore[arg-type]
    task = asyncio.ensure_future(asyncio.sleep(60))
    await _pump_client(reader, ctx, task)
    await asyncio.sleep(0)
    got = [ctx.inbox.get_nowait() for _ in range(ctx.inbox.qsize())]
    return got, ctx.client_error, task.cancelled()


def test_the_daemon_reads_input_payloads_exactly() -> None:
    import asyncio

    stream = (b'{"type":"stdin","len":3}\nab\n{"type":"stdin","data":"QUJD"}\n'
              b'{"type":"stdin","len":0}\n{"type":"stdin_eof"}\n')
    got, error, cancelled = asyncio.run(_pump(stream))
    assert got == [{"type": "stdin", "len": 3, "data": b"ab\n"},
                   {"type": "stdin"},  # base64 inside the JSON is not input any more
                   {"type": "stdin", "len": 0, "data": b""}, {"type": "stdin_eof"}]
    assert error is None and cancelled  # the hang-up at the end cancels the operation


@pytest.mark.parametrize("line", [
    b'{"type":"stdin","len":1048577}\n',
    b'{"type":"stdin","len":-5}\n',
    b'{"type":"stdin","len":"12"}\n',
    b'{"type":"stdin","len":1e3}\n',
])
def test_the_daemon_refuses_a_bad_input_length_without_reading_on(line: bytes) -> None:
    import asyncio

    got, error, cancelled = asyncio.run(_pump(line + b"x" * 100 + b'\n{"type":"stdin_eof"}\n'))
    assert got == [] and cancelled
    assert isinstance(error, InvalidArgument) and "data length" in error.message


def test_a_truncated_input_payload_is_a_hang_up() -> None:
    import asyncio

    got, error, cancelled = asyncio.run(_pump(b'{"type":"stdin","len":10}\nabc'))
    assert got == [] and error is None and cancelled
