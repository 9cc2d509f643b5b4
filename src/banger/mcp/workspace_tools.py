"""workspace_prepare (a host repo into a VM) and workspace_export (the guest's work as a diff)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from pydantic import Field

from banger.client import AsyncClient
from banger.mcp.common import DIFF_CAP, MAX_FILE_CAP, bounded, one_line_errors, progress_to
from banger.mcp.vm_tools import VmName


def _diff_of(export_file: Path, cap: int) -> tuple[bytes, int, int, int]:
    """The export's diff (first cap bytes), bytes left out, commits and files changed."""
    from banger.workspace import exportfile

    export = exportfile.read_file(export_file)  # checked strictly: the guest wrote it
    try:
        with export.diff.open("rb") as f:
            data = f.read(cap)
            more = max(export.diff.stat().st_size - cap, 0)
        return data, more, export.commits, export.files
    finally:
        export.remove()


def register(server: MCPServer[Any], api: AsyncClient) -> None:
    @server.tool()
    @one_line_errors
    async def workspace_prepare(
        name: VmName,
        path: Annotated[str, Field(description="A host path inside a git repo",
                                   max_length=4096)],
        include_untracked: Annotated[bool, Field(description="Also ship untracked files")]
        = False,
        force: Annotated[bool, Field(description="Replace a guest checkout with unexported "
                                                 "work")] = False,
        ctx: Context | None = None,
    ) -> dict[str, Any]:
        """Ship the host git repo holding `path` into a running VM (at /root/repo); returns
        where it is and the base commit. Commands should then run with cwd set to 'cwd'."""
        from banger.workspace.payload import ShipOptions

        opts = ShipOptions(include_untracked=include_untracked)
        res = await api.workspace_prepare(name, Path(path).expanduser(), opts, force=force,
                                          on_progress=progress_to(ctx) if ctx else None)
        return {"vm": res.vm, "base": res.base, "guest_path": res.guest_path, "cwd": res.cwd,
                "tooling": res.tooling}

    @server.tool()
    @one_line_errors
    async def workspace_export(
        name: VmName,
        max_bytes: Annotated[int, Field(description="Bytes of diff returned at most")]
        = DIFF_CAP,
    ) -> dict[str, Any]:
        """The guest's work since the workspace was shipped, as a git diff (commits and
        uncommitted changes together; binary files as git binary patches)."""
        cap = bounded(max_bytes, 1, MAX_FILE_CAP, "max_bytes")
        with tempfile.TemporaryDirectory(prefix="banger-mcp-") as tmp:
            out = Path(tmp) / "export.tar"
            await api.workspace_export(name, out)
            data, more, commits, files = _diff_of(out, cap)
        diff = data.decode("utf-8", errors="replace")
        if more:
            diff += f"\n[banger: diff cut: {more} more bytes not shown]"
        return {"commits": commits, "files": files, "diff": diff}
