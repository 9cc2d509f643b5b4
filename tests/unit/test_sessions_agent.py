"""Guest sessions on the real guest agent run as a host process (no VM): they outlive the host
connection, logs are gapless across reconnects and capped, exit codes and signals are recorded."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger.agent.client import AgentClient, connect_unix
from banger.agent.process import PtySpec
from banger.agent.sessions import (
    SessionInfo,
    Sessions,
    SessionStream,
    StartSpec,
    final_state,
    logs_answer,
)
from banger.errors import OperationFailed
from tests.unit.test_agent_e2e import AgentUnderTest

pytestmark = pytest.mark.timeout(120)

TICK = "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.05; done"


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentUnderTest]:
    under_test = AgentUnderTest(tmp_path)
    yield under_test
    under_test.stop()


async def connect(agent: AgentUnderTest) -> AgentClient:
    return await connect_unix(agent.socket, timeout=10)


async def read_log(client: AgentClient, name: str, **kw: int) -> bytes:
    stream = Sessions(client).logs(name, **kw)  # type: ignore[arg-type]
    data = b"".join([chunk async for chunk in stream.chunks()])
    logs_answer(await stream.result())
    return data


async def wait_state(client: AgentClient, name: str, state: str) -> SessionInfo:
    for _ in range(400):
        info = await Sessions(client).show(name)
        if info.state == state:
            return info
        await asyncio.sleep(0.025)
    raise AssertionError(f"session {name} never became {state}")


async def drain(stream: SessionStream) -> None:
    async for _ in stream.chunks():
        pass


def ticks(data: bytes) -> list[int]:
    return [int(n) for n in re.findall(rb"tick (\d+)\n", data)]


def test_a_session_outlives_the_connection_and_its_log_has_no_gap(agent: AgentUnderTest) -> None:
    async def scenario() -> None:
        client = await connect(agent)
        info = await Sessions(client).start(StartSpec("ticker", ["sh", "-c", TICK]))
        assert info.state == "running" and info.pid
        while len(ticks(await read_log(client, "ticker"))) < 5:
            await asyncio.sleep(0.05)
        await client.close()  # the host goes away (a daemon kill -9 looks the same to the agent)
        await asyncio.sleep(0.3)
        client = await connect(agent)
        assert (await Sessions(client).show("ticker")).state == "running"
        numbers = ticks(await read_log(client, "ticker"))
        assert numbers == list(range(len(numbers))) and len(numbers) >= 8
        tail = await read_log(client, "ticker", lines=2)
        assert len(tail.splitlines()) == 2
        stopped = await Sessions(client).signal("ticker", 15, grace=5)
        assert stopped.state == "exited" and stopped.signal == 15 and stopped.ended
        listed = await Sessions(client).list()
        assert [s.name for s in listed] == ["ticker"]
        await client.close()

    asyncio.run(scenario())


def test_exit_code_kill_signal_and_rm(agent: AgentUnderTest) -> None:
    async def scenario() -> None:
        client = await connect(agent)
        await Sessions(client).start(StartSpec("three", ["sh", "-c", "echo out; echo err >&2; exit 3"]))
        done = await wait_state(client, "three", "exited")
        assert (done.exit_code, done.signal, done.lost) == (3, None, False)
        assert await read_log(client, "three") == b"out\nerr\n"
        await Sessions(client).start(StartSpec("sleeper", ["sleep", "600"]))
        with pytest.raises(OperationFailed, match="running"):
            await Sessions(client).remove("sleeper")
        killed = await Sessions(client).signal("sleeper", 9)
        assert killed.state == "exited" and killed.signal == 9
        await Sessions(client).remove("sleeper")
        with pytest.raises(OperationFailed, match="no session"):
            await Sessions(client).show("sleeper")
        with pytest.raises(OperationFailed, match="already exists"):
            await Sessions(client).start(StartSpec("three", ["true"]))
        await client.close()

    asyncio.run(scenario())


def test_the_log_cap_drops_the_oldest_output(agent: AgentUnderTest) -> None:
    async def scenario() -> None:
        client = await connect(agent)
        script = "i=0; while [ $i -lt 3000 ]; do echo line $i; i=$((i+1)); done"
        await Sessions(client).start(StartSpec("big", ["sh", "-c", script], log_cap=8192))
        info = await wait_state(client, "big", "exited")
        assert info.log_end > 20000 and info.log_end - info.log_start <= 8192
        data = await read_log(client, "big")
        assert len(data) <= 8192 and data.endswith(b"line 2999\n")
        kept = sum(f.stat().st_size for f in (agent.root / "var/lib/banger/sessions/big").glob("log.*"))
        assert kept <= 8192
        await client.close()

    asyncio.run(scenario())


def test_send_reaches_a_cat_session_and_attach_types_into_a_shell(agent: AgentUnderTest) -> None:
    async def scenario() -> None:
        client = await connect(agent)
        await Sessions(client).start(StartSpec("cat", ["cat"]))
        assert await Sessions(client).write("cat", b"hello cat\n") == len(b"hello cat\n")
        for _ in range(200):
            if await read_log(client, "cat") == b"hello cat\n":
                break
            await asyncio.sleep(0.02)
        assert await read_log(client, "cat") == b"hello cat\n"

        await Sessions(client).start(StartSpec("sh", ["sh", "-i"], pty=PtySpec(30, 100)))
        first = await Sessions(client).attach("sh", write=True, rows=30, cols=100)
        second = await Sessions(client).attach("sh", write=True)
        assert first.writer and not second.writer  # one writer at a time
        await second.write(b"echo from-second\n")  # dropped: the second attach is read-only
        await first.write(b"stty size; echo from-$((40+2))\n")
        seen = b""

        async def until_seen() -> None:
            nonlocal seen
            async for chunk in first.chunks():
                seen += chunk
                if b"from-42" in seen and b"30 100" in seen:
                    return

        await asyncio.wait_for(until_seen(), 20)
        first.close()
        third = await Sessions(client).attach("sh", write=True)
        assert third.writer  # the writer's seat is free once it detached
        await third.write(b"exit 7\n")
        await asyncio.wait_for(drain(third), 20)
        assert final_state(await third.result()).exit_code == 7
        assert b"from-second" not in await read_log(client, "sh")
        await client.close()

    asyncio.run(scenario())
