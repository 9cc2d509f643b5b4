"""banger mcp's tools in process (the SDK's in-memory client), no daemon: their names and
schemas, and that every refusal is one line."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from banger.client import AsyncClient
from banger.mcp.server import build
from banger.paths import resolve_paths


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncClient:
    monkeypatch.setenv("BANGER_HOME", str(tmp_path))
    return AsyncClient(resolve_paths(), autostart=False)  # no daemon: calls fail in one line


def calls(api: AsyncClient, *requests: tuple[str, dict[str, Any]]) -> list[tuple[bool, str]]:
    async def main() -> list[tuple[bool, str]]:
        async with Client(build(api)) as c:
            out = []
            for tool, args in requests:
                res = await c.call_tool(tool, args)
                out.append((res.is_error, res.content[0].text))  # type: ignore[union-attr]
            return out

    return asyncio.run(main())


def test_the_tools_an_agent_sees(api: AsyncClient) -> None:
    async def main() -> dict[str, list[str]]:
        async with Client(build(api)) as c:
            return {t.name: sorted(t.input_schema.get("required", []))
                    for t in (await c.list_tools()).tools}

    tools = asyncio.run(main())
    assert tools["vm_exec"] == ["command", "name"] and tools["vm_create"] == []
    assert {"vm_list", "vm_delete", "vm_fork", "file_read", "file_write", "workspace_prepare",
            "workspace_export", "session_start", "session_list", "session_logs",
            "session_send", "session_stop"} <= set(tools)


@pytest.mark.parametrize(("tool", "args", "says"), [
    ("vm_exec", {"name": "x", "command": []}, "bad argument command"),
    ("vm_exec", {"name": "x"}, "bad argument command: Field required"),
    ("vm_exec", {"name": "x", "command": ["a"], "max_output": 0}, "max_output must be"),
    ("file_write", {"name": "x", "path": "rel", "content": "a"}, "absolute guest file path"),
    ("file_write", {"name": "x", "path": "/a", "content": "%%", "encoding": "base64"},
     "not valid base64"),
    ("vm_list", {}, "daemon is not running"),
    ("vm_create", {"memory": "lots"}, "memory"),
    ("vm_create", {"allow": ["127.0.0.1:80"]}, "host.banger.internal"),
])
def test_every_refusal_is_one_line(api: AsyncClient, tool: str, args: dict[str, Any],
                                   says: str) -> None:
    [(failed, line)] = calls(api, (tool, args))
    assert failed and says in line and "\n" not in line and len(line) < 400
