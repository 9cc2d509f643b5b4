"""The MCP server: banger's tools on the official SDK's MCPServer, over stdio or HTTP."""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import MCPServer

from banger import __version__
from banger.client import AsyncClient
from banger.mcp import file_tools, session_tools, vm_tools, workspace_tools

INSTRUCTIONS = (
    "banger runs sandbox microVMs on this machine. Create one with vm_create, run commands "
    "with vm_exec (argv lists; outputs are capped), move files with file_read/file_write, "
    "ship a host git repo in with workspace_prepare and get the work back as a diff with "
    "workspace_export; delete VMs you made with vm_delete. Long-running commands: "
    "session_start, then session_logs."
)


def build(api: AsyncClient | None = None) -> MCPServer[Any]:
    server: MCPServer[Any] = MCPServer("banger", instructions=INSTRUCTIONS,
                                       version=__version__, log_level="WARNING")
    api = api or AsyncClient()
    for area in (vm_tools, file_tools, workspace_tools, session_tools):
        area.register(server, api)
    return server


def run_stdio() -> None:
    import anyio

    anyio.run(build().run_stdio_async)
