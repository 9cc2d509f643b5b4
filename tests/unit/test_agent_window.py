"""The per-channel window HELLO agrees on: a current agent takes the host's larger window, an
older agent (no "window" in its answer) keeps the default, hostile values fall back."""

from __future__ import annotations

import socket
from pathlib import Path

import msgspec
import pytest

from banger.agent.client import AgentClient
from banger.agent.results import HelloAck
from banger.guest.agent import protocol as proto
from tests.unit.test_agent_e2e import AgentUnderTest, agent  # noqa: F401 - the fixture

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(("asked", "agreed"), [
    (proto.LARGE_WINDOW, proto.LARGE_WINDOW), (None, proto.INITIAL_WINDOW),
    (proto.MAX_WINDOW + 1, proto.INITIAL_WINDOW), (1, proto.INITIAL_WINDOW),
    (True, proto.INITIAL_WINDOW), ("4194304", proto.INITIAL_WINDOW),
    (float(proto.LARGE_WINDOW), proto.INITIAL_WINDOW),
])
def test_agreed_window(asked: object, agreed: int) -> None:
    assert proto.agreed_window(asked) == agreed


def test_an_older_agents_answer_keeps_the_default_window() -> None:
    old = b'{"version":1,"nonce":"ab","agent_version":"0.1","pid1":false}'
    assert msgspec.json.decode(old, type=HelloAck).window == proto.INITIAL_WINDOW
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(old[:-1] + b',"window":99999999999}', type=HelloAck)


def test_an_older_hosts_hello_gets_the_default_window(agent: AgentUnderTest) -> None:  # noqa: F811
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(agent.socket))
        s.sendall(proto.encode_json(proto.HELLO, proto.SESSION_CHANNEL,
                                    {"version": 1, "nonce": "cafe"}))
        decoder = proto.FrameDecoder()
        frames: list[proto.Frame | proto.OversizedFrame] = []
        while not frames:
            frames = decoder.feed(s.recv(65536))
    [ack] = frames
    assert isinstance(ack, proto.Frame) and ack.json()["window"] == proto.INITIAL_WINDOW


def test_a_current_agent_agrees_on_the_large_window(agent: AgentUnderTest,  # noqa: F811
                                                    tmp_path: Path) -> None:
    async def scenario(client: AgentClient) -> None:
        assert client.window == proto.LARGE_WINDOW
        proc = await client.exec(["head", "-c", "20M", "/dev/zero"])
        out, _, status = await proc.communicate(max_output=32 << 20)
        assert status.code == 0 and out == bytes(20 << 20)
        proc = await client.exec(["sh", "-c", "wc -c"], stdin=True)
        out, _, status = await proc.communicate(b"x" * (9 << 20))
        assert out.split() == [str(9 << 20).encode()]

    agent.run(scenario)
