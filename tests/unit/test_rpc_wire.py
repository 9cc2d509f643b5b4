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
    ({"v": 1, "method": "x" * 100_000}, UnknownMethod),
    ({"v": 1, "method": ["ping"]}, UnknownMethod),
    ({"v": 1, "method": "ping", "params": {"\x1b[31m" + "k" * 10_000: 1}}, InvalidArgument),
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
    _parse_request(b'{"v":1,"method":"ping","op_id":"op-0000abcd\\n"}')
    assert current_op.get() == "op-00000000"
    _parse_request(b'{"v":1,"method":"ping","op_id":"op-0000abcd"}')
    assert current_op.get() == "op-0000abcd"
