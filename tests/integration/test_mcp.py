"""`banger mcp` driven by the official MCP SDK's own client: over stdio against a real VM (every
tool an agent would use, in one lean flow on one VM), and over streamable HTTP (refused without
the token or under another Host name, served with it)."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, TextResourceContents

from tests.conftest import BIN, Banger
from tests.vmtest import SLIM, vm_home, vm_lock

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]

VM = "mcpvm"


@pytest.fixture(scope="module")
def b() -> Iterator[Banger]:
    with vm_lock(), vm_home(SLIM) as banger:
        yield banger


def stdio(b: Banger) -> Client:
    return Client(StdioServerParameters(command=str(BIN / "banger"), args=["mcp"], env=b.env),
                  read_timeout_seconds=600)


async def ok(client: Client, tool: str, **args: Any) -> Any:
    """A tool's structured result (a list comes wrapped as {"result": [...]}); fails on error."""
    res = await client.call_tool(tool, args)
    assert not res.is_error, (tool, res.content)
    if res.structured_content is None:
        return res.content[0].text  # type: ignore[union-attr]
    return res.structured_content.get("result", res.structured_content)


def error_line(res: CallToolResult) -> str:
    assert res.is_error and len(res.content) == 1
    line: str = res.content[0].text  # type: ignore[union-attr]
    assert "\n" not in line and len(line) < 600
    return line


def make_repo(root: Path) -> Path:
    repo = root / "repo"
    repo.mkdir()
    (repo / "hello.txt").write_text("hello\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-q", "-m", "first"]):
        subprocess.run(["git", "-C", str(repo), *cmd], check=True, env=env)
    return repo


def test_an_agent_drives_a_vm_through_every_tool_over_stdio(b: Banger, tmp_path: Path) -> None:
    repo = make_repo(tmp_path)

    async def scenario() -> None:
        async with stdio(b) as c:
            names = {t.name for t in (await c.list_tools()).tools}
            assert {"vm_create", "vm_list", "vm_exec", "vm_delete", "file_read", "file_write",
                    "workspace_prepare", "workspace_export", "session_start",
                    "session_logs", "vm_fork"} <= names

            stages: list[str] = []

            async def progress(progress: float, total: float | None, message: str | None) -> None:
                stages.append(message or "")

            res = await c.call_tool("vm_create", {"name": VM}, progress_callback=progress)
            created = res.structured_content
            assert not res.is_error and created and created["name"] == VM
            assert created["state"] == "running" and stages  # the daemon's stages, as progress
            assert [vm["name"] for vm in await ok(c, "vm_list")] == [VM]

            hi = await ok(c, "vm_exec", name=VM, command=["echo", "hi"])
            assert (hi["exit_code"], hi["stdout"], hi["stderr"]) == (0, "hi\n", "")
            failed = await ok(c, "vm_exec", name=VM, command=["sh", "-c", "echo no >&2; exit 7"])
            assert (failed["exit_code"], failed["stderr"]) == (7, "no\n")
            big = await ok(c, "vm_exec", name=VM, command=["head", "-c", "5000", "/dev/zero"],
                           max_output=1000)
            assert big["stdout"] == "\0" * 1000 + "\n[banger: stdout cut: 4000 more bytes not shown]"
            fed = await ok(c, "vm_exec", name=VM, command=["wc", "-c"], stdin="abc")
            assert fed["stdout"].strip() == "3"

            text = "line one\nünïcode\n"
            await ok(c, "file_write", name=VM, path="/root/note.txt", content=text)
            back = await ok(c, "file_read", name=VM, path="/root/note.txt")
            assert back["content"] == text and "truncated" not in back
            raw = bytes(range(256))
            await ok(c, "file_write", name=VM, path="/tmp/raw.bin",
                     content=base64.b64encode(raw).decode(), encoding="base64")
            got = await ok(c, "file_read", name=VM, path="/tmp/raw.bin", encoding="base64",
                           max_bytes=100)
            assert base64.b64decode(got["content"]) == raw[:100] and "156 more" in got["truncated"]
            # a 30 GiB sparse file: 10 bytes leave the guest, the note has its real size
            sparse = ["truncate", "-s", "30G", "/root/sparse"]
            assert (await ok(c, "vm_exec", name=VM, command=sparse))["exit_code"] == 0
            head = await ok(c, "file_read", name=VM, path="/root/sparse", max_bytes=10)
            assert head == {"path": "/root/sparse", "content": "\0" * 10, "encoding": "utf-8",
                            "truncated": f"{30 * 2**30 - 10} more bytes not shown"}
            tree = await c.call_tool("file_read", {"name": VM, "path": "/usr"})
            assert "/usr: not a regular file" in error_line(tree)
            gone = await c.call_tool("file_read", {"name": VM, "path": "/root/nope"})
            assert "/root/nope: no such file" in error_line(gone)
            await ok(c, "vm_exec", name=VM, command=["rm", "/root/sparse"])

            forks = await ok(c, "vm_fork", name=VM, fork_name="mcpfork")
            assert [(f["name"], f["state"]) for f in forks] == [("mcpfork", "running")]
            in_fork = await ok(c, "vm_exec", name="mcpfork", command=["cat", "/root/note.txt"])
            assert in_fork["stdout"] == text  # the fork has the source's disk
            assert await ok(c, "vm_delete", name="mcpfork") == "deleted mcpfork"

            shipped = await ok(c, "workspace_prepare", name=VM, path=str(repo))
            here = await ok(c, "vm_exec", name=VM, command=["pwd"])  # exec starts in it now
            assert here["stdout"] == shipped["cwd"] + "\n"
            edit = "echo changed >> hello.txt && echo new > added.txt"
            assert (await ok(c, "vm_exec", name=VM, command=["sh", "-c", edit]))["exit_code"] == 0
            export = await ok(c, "workspace_export", name=VM)
            assert export["files"] == 2
            assert "+changed" in export["diff"] and "added.txt" in export["diff"]

            started = await ok(c, "session_start", name=VM, command=["sh", "-c", "echo tick; sleep 600"],
                               session="ticker")
            assert started["state"] == "running"
            await wait_for_log(c, "ticker", "tick\n")
            assert [s["name"] for s in await ok(c, "session_list", name=VM)] == ["ticker"]
            stopped = await ok(c, "session_stop", name=VM, session="ticker", grace=1)
            assert stopped["state"] == "exited"

            shout = "printf '\\033[31mmcp-marker\\033]0;title\\007\\n' > /dev/console"
            assert (await ok(c, "vm_exec", name=VM, command=["sh", "-c", shout]))["exit_code"] == 0
            await wait_for_console(c, "mcp-marker\n")

            missing = await c.call_tool("vm_exec", {"name": "no-such-vm", "command": ["true"]})
            assert "no VM named 'no-such-vm'" in error_line(missing)

            assert await ok(c, "vm_delete", name=VM) == f"deleted {VM}"
            assert await ok(c, "vm_list") == []

    asyncio.run(scenario())


async def wait_for_log(c: Client, session: str, want: str) -> None:
    for _ in range(200):
        if want in await ok(c, "session_logs", name=VM, session=session):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"session {session} never printed {want!r}")


async def wait_for_console(c: Client, want: str) -> None:
    """The console resource shows what the guest wrote there, its escape sequences removed."""
    for _ in range(200):
        console = await c.read_resource(f"banger://vm/{VM}/console")
        body = console.contents[0]
        assert isinstance(body, TextResourceContents) and "\x1b" not in body.text
        if want in body.text:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"the console never showed {want!r}")


def test_http_is_refused_without_the_token_or_under_another_host_and_works_with_it(
        b: Banger, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    proc = subprocess.Popen([str(BIN / "banger"), "mcp", "--http", "127.0.0.1:0",
                             "--token-file", str(token_file)], env=b.env,
                            stderr=subprocess.PIPE, text=True)
    try:
        made = proc.stderr.readline()  # type: ignore[union-attr]
        serving = proc.stderr.readline()  # type: ignore[union-attr]
        token = token_file.read_text().strip()
        assert token in made and token_file.stat().st_mode & 0o777 == 0o600
        found = re.search(r"serving (http://127\.0\.0\.1:(\d+)/mcp)", serving)
        assert found, serving
        url, port = found.group(1), found.group(2)
        hello = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        headers = {"accept": "application/json, text/event-stream"}
        assert httpx.post(url, json=hello, headers=headers).status_code == 401
        assert httpx.post(url, json=hello, headers={**headers, "authorization": "Bearer nope"}
                          ).status_code == 401
        rebound = httpx.post(url, json=hello, headers={**headers, "host": f"evil.example:{port}",
                                                       "authorization": f"Bearer {token}"})
        assert rebound.status_code == 421
        upgrade = {"host": f"127.0.0.1:{port}", "authorization": f"Bearer {token}",
                   "connection": "Upgrade", "upgrade": "websocket", "sec-websocket-version": "13",
                   "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ=="}
        assert httpx.get(url, headers=upgrade).status_code == 403  # no websocket, even with it

        async def with_token() -> list[Any]:
            auth = httpx2.AsyncClient(headers={"authorization": f"Bearer {token}"})
            async with Client(streamable_http_client(url, http_client=auth)) as c:
                assert "vm_exec" in {t.name for t in (await c.list_tools()).tools}
                return list(await ok(c, "vm_list"))

        assert asyncio.run(with_token()) == []

        async def without_token() -> None:
            async with Client(url) as c:
                await c.list_tools()

        with pytest.raises(BaseException) as refused:
            asyncio.run(without_token())
        assert leaves(refused.value) == ["Server returned an error response"]  # the 401
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def leaves(exc: BaseException) -> list[str]:
    """The messages at the bottom of an exception group (the SDK's task groups wrap them)."""
    if isinstance(exc, BaseExceptionGroup):
        return [m for sub in exc.exceptions for m in leaves(sub)]
    return [str(exc)]
