"""The MCP server: banger's tools on the official SDK's MCPServer, over stdio or HTTP."""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, InputRequiredResult
from pydantic import ValidationError

from banger import __version__
from banger.client import AsyncClient
from banger.mcp import file_tools, session_tools, vm_tools, workspace_tools
from banger.textsafe import one_line

INSTRUCTIONS = (
    "banger runs sandbox microVMs on this machine. Create one with vm_create, run commands "
    "with vm_exec (argv lists; outputs are capped), move files with file_read/file_write, "
    "ship a host git repo in with workspace_prepare and get the work back as a diff with "
    "workspace_export; vm_fork copies a running VM; delete VMs you made with vm_delete. "
    "Long-running commands: "
    "session_start, then session_logs."
)


class BangerServer(MCPServer[Any]):
    async def call_tool(self, name: str, arguments: dict[str, Any],
                        context: Context[Any, Any] | None = None
                        ) -> CallToolResult | InputRequiredResult:
        """Arguments the tool's schema refuses are one line too (pydantic's report has many)."""
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if not isinstance(cause, ValidationError):
                raise
            first = cause.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "arguments"
            more = f" (and {cause.error_count() - 1} more)" if cause.error_count() > 1 else ""
            raise ToolError(one_line(f"Error executing tool {name}: bad argument {where}: "
                                     f"{first['msg']}{more}", 300)) from None


def build(api: AsyncClient | None = None) -> MCPServer[Any]:
    server = BangerServer("banger", instructions=INSTRUCTIONS, version=__version__,
                          log_level="WARNING")
    api = api or AsyncClient()
    for area in (vm_tools, file_tools, workspace_tools, session_tools):
        area.register(server, api)
    return server


def run_stdio() -> None:
    import anyio

    anyio.run(build().run_stdio_async)
