"""`vm acp`: an agent in a hostile guest gets no editor file or terminal access."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Iterator

from banger.agents.acp_guard import MAX_LINE, Lines, from_agent, from_editor


def msg(**fields: object) -> bytes:
    return json.dumps({"jsonrpc": "2.0", **fields}).encode()


def test_initialize_offers_the_agent_no_host_access() -> None:
    offered = {"fs": {"readTextFile": True, "writeTextFile": True}, "terminal": True}
    out = json.loads(from_editor(msg(id=0, method="initialize",
                                     params={"protocolVersion": 1,
                                             "clientCapabilities": offered})))
    assert out["params"] == {"protocolVersion": 1, "clientCapabilities": {
        "fs": {"readTextFile": False, "writeTextFile": False}, "terminal": False}}
    other = msg(id=1, method="session/prompt", params={"prompt": []})
    assert from_editor(other) == other + b"\n"


def test_the_agent_cannot_reach_the_editors_files_or_terminals() -> None:
    for method in ("fs/read_text_file", "fs/write_text_file", "terminal/create",
                   "terminal/output", "terminal/kill", "_zed/anything"):
        to_editor, to_agent = from_agent(msg(id=7, method=method, params={"path": "/etc/passwd"}))
        assert to_editor is None and to_agent is not None
        answer = json.loads(to_agent)
        assert answer["id"] == 7 and answer["error"]["code"] == -32601


def test_updates_permission_requests_and_responses_pass() -> None:
    update = msg(method="session/update", params={"sessionId": "s", "update": {}})
    assert json.loads(from_agent(update)[0] or b"") == json.loads(update)
    ask = msg(id=3, method="session/request_permission", params={})
    assert from_agent(ask)[0] is not None and from_agent(ask)[1] is None
    response = msg(id=0, result={"agentInfo": {"name": "OpenCode"}})
    assert json.loads(from_agent(response)[0] or b"")["result"]["agentInfo"]["name"] == "OpenCode"


def test_anything_else_from_the_agent_is_dropped() -> None:
    for line in (b"not json", b"[1,2]", msg(method="fs/write_text_file", params={}),
                 b'\x1b]0;owned\x07{"id":1}', msg(result=1)):
        assert from_agent(line) == (None, None)
    # Duplicate keys: what is forwarded is what was checked (re-encoded), not the raw line.
    dup = b'{"jsonrpc":"2.0","method":"fs/write_text_file","method":"session/update"}'
    assert from_agent(dup)[0] == b'{"jsonrpc":"2.0","method":"session/update"}\n'


def test_lines_are_split_and_an_oversized_one_is_dropped_whole() -> None:
    lines = Lines()
    assert list(lines.feed(b'{"a":1}\n{"b"')) == [b'{"a":1}']
    assert list(lines.feed(b':2}\n\n')) == [b'{"b":2}']
    assert list(lines.feed(b"x" * (MAX_LINE + 1))) == []
    assert list(lines.feed(b"tail of the huge one\n{\"c\":3}\n")) == [b'{"c":3}']
    assert list(lines.feed(b"y" * (MAX_LINE + 1) + b'\n{"d":4}\n')) == [b'{"d":4}']


class FakeCall:
    """The daemon's side of `vm acp`'s exec: what the agent printed, and what it was sent."""

    def __init__(self, stdout: bytes, stderr: bytes) -> None:
        self.out, self.err = stdout, stderr
        self.sent: list[bytes] = []
        self.eof = threading.Event()
        self.result: dict[str, int] | None = None

    def send(self, message: dict[str, object]) -> None:
        if message.get("type") == "stdin_eof":
            self.eof.set()

    def send_data(self, data: bytes, kind: str = "stdin") -> None:
        self.sent.append(data)

    def events(self) -> Iterator[dict[str, object]]:
        assert self.eof.wait(10)  # the editor's messages first, as an agent answers them
        yield {"type": "data", "stream": "stdout", "data": self.out}
        yield {"type": "data", "stream": "stderr", "data": self.err}
        self.result = {"code": 0}

    def close(self) -> None:
        pass


def test_the_bridge_puts_the_guard_between_editor_and_agent() -> None:
    from banger.cli.acp_bridge import bridge

    editor_in, editor_out = os.pipe()
    os.write(editor_out, msg(id=0, method="initialize", params={
        "clientCapabilities": {"fs": {"writeTextFile": True}, "terminal": True}}) + b"\n")
    os.close(editor_out)
    update = msg(method="session/update", params={"x": 1})
    answer = msg(id=0, result={"agentInfo": {"name": "OpenCode"}})
    steal = msg(id=5, method="fs/read_text_file", params={"path": "/home/u/.ssh/id_ed25519"})
    call = FakeCall(b"\n".join([steal, update, b"garbage", answer]) + b"\n",
                    b"\x1b]0;title\x07agent log\n")
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        code = bridge(call, stdin=editor_in, stdout=out.fileno(),  # type: ignore[arg-type]
                      stderr=err.fileno())
        out.seek(0)
        err.seek(0)
        to_editor, logged = out.read(), err.read()
    os.close(editor_in)
    assert code == 0
    assert [json.loads(line).get("method", "response")
            for line in to_editor.splitlines()] == ["session/update", "response"]
    initialize, refusal = (json.loads(d) for d in call.sent)
    assert initialize["params"]["clientCapabilities"]["terminal"] is False
    assert refusal["id"] == 5 and refusal["error"]["code"] == -32601
    assert logged == b"agent log\n"
