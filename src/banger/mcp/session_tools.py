"""Session tools: long-running guest commands that outlive the MCP server (docs/sessions.md)."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from pydantic import Field

from banger.client import AsyncClient
from banger.mcp.common import LOG_CAP, MAX_FILE_CAP, bounded, one_line_errors, text
from banger.mcp.vm_tools import Argv, VmName

SessionName = Annotated[str, Field(description="The session's name", max_length=63)]


def session_row(s: Any) -> dict[str, Any]:
    return {"vm": s.vm, "name": s.name, "state": s.state, "argv": s.argv, "cwd": s.cwd,
            "pid": s.pid, "exit_code": s.exit_code, "signal": s.signal, "lost": s.lost}


def register(server: MCPServer[Any], api: AsyncClient) -> None:
    @server.tool()
    @one_line_errors
    async def session_start(
        name: VmName, command: Argv,
        session: Annotated[str | None, Field(description="Session name (default: generated)",
                                             max_length=63)] = None,
        cwd: Annotated[str | None, Field(description="Guest dir (default: the workspace, "
                                                     "else /root)")] = None,
    ) -> dict[str, Any]:
        """Start a command as a guest session: it keeps running after this call; read its
        output with session_logs."""
        return session_row(await api.session_start(name, command, name=session, cwd=cwd))

    @server.tool()
    @one_line_errors
    async def session_list(
        name: Annotated[str | None, Field(description="A VM (default: every running VM)",
                                          max_length=63)] = None,
    ) -> list[dict[str, Any]]:
        """Sessions with their state and exit status."""
        return [session_row(s) for s in await api.session_list(name)]

    @server.tool()
    @one_line_errors
    async def session_logs(
        name: VmName, session: SessionName,
        tail: Annotated[int | None, Field(description="Only the last N lines", ge=1,
                                          le=100000)] = None,
        max_bytes: Annotated[int, Field(description="Newest bytes returned at most")]
        = LOG_CAP,
    ) -> str:
        """A session's output so far (stdout and stderr together, newest max_bytes)."""
        cap = bounded(max_bytes, 1, MAX_FILE_CAP, "max_bytes")
        data, dropped = await api.session_logs(name, session, tail=tail, limit=cap)
        return text(data, dropped, "log", newest=True)

    @server.tool()
    @one_line_errors
    async def session_send(
        name: VmName, session: SessionName,
        input: Annotated[str, Field(description="Text written to the session's stdin "
                                                "(add \\n for a line)", max_length=1024 * 1024)],
        eof: Annotated[bool, Field(description="Then close its stdin")] = False,
    ) -> str:
        """Write text to a running session's stdin."""
        sent = await api.session_send(name, session, input.encode(), eof=eof)
        return f"sent {sent} bytes"

    @server.tool()
    @one_line_errors
    async def session_stop(
        name: VmName, session: SessionName,
        grace: Annotated[float, Field(description="Seconds between SIGTERM and SIGKILL",
                                      ge=0, le=600)] = 10.0,
    ) -> dict[str, Any]:
        """Stop a session (SIGTERM, then SIGKILL after the grace period)."""
        return session_row(await api.session_stop(name, session, grace=grace))
