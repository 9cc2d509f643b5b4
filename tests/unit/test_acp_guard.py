"""`vm acp`: an agent in a hostile guest gets no editor file or terminal access."""

from __future__ import annotations

import json

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
