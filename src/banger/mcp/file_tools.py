"""file_read and file_write: one guest file through `vm cp` (the guest's tar, banger's extractor)."""

from __future__ import annotations

import base64
import binascii
import os
import posixpath
import stat
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from banger.client import AsyncClient
from banger.mcp.common import FILE_CAP, MAX_FILE_CAP, WRITE_CAP, bounded, one_line_errors
from banger.mcp.vm_tools import VmName

GuestPath = Annotated[str, Field(description="Absolute path in the guest", min_length=2,
                                 max_length=4096)]
Encoding = Literal["utf-8", "base64"]


def _guest_path(path: str) -> str:
    clean = posixpath.normpath(path)
    if not clean.startswith("/") or clean == "/":
        raise ToolError(f"give an absolute guest file path, not {path[:200]!r}")
    return clean


def _read_capped(path: Path, cap: int) -> tuple[bytes, int]:
    """A regular file's first cap bytes and how many more there were; nothing followed."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ToolError("not a regular file (a directory, link or device)")
        return f.read(cap), max(st.st_size - cap, 0)


def register(server: MCPServer[Any], api: AsyncClient) -> None:
    @server.tool()
    @one_line_errors
    async def file_read(
        name: VmName, path: GuestPath,
        encoding: Annotated[Encoding, Field(description="utf-8 text (bad bytes replaced) or "
                                                        "base64")] = "utf-8",
        max_bytes: Annotated[int, Field(description="Bytes returned at most")] = FILE_CAP,
    ) -> dict[str, Any]:
        """Read a file from a VM (the first max_bytes; 'truncated' says how many more)."""
        cap = bounded(max_bytes, 1, MAX_FILE_CAP, "max_bytes")
        guest = _guest_path(path)
        with tempfile.TemporaryDirectory(prefix="banger-mcp-") as tmp:
            local = Path(tmp) / "file"
            await api.cp_out(name, guest, str(local))
            data, more = _read_capped(local, cap)
        body = base64.b64encode(data).decode() if encoding == "base64" else \
            data.decode("utf-8", errors="replace")
        result: dict[str, Any] = {"path": guest, "content": body, "encoding": encoding}
        if more:
            result["truncated"] = f"{more} more bytes not shown"
        return result

    @server.tool()
    @one_line_errors
    async def file_write(
        name: VmName, path: GuestPath,
        content: Annotated[str, Field(description="The file's content",
                                      max_length=2 * WRITE_CAP)],
        encoding: Annotated[Encoding, Field(description="content is utf-8 text or base64")]
        = "utf-8",
    ) -> str:
        """Write a file in a VM (replaced if it exists; its directory must exist)."""
        guest = _guest_path(path)
        try:
            data = base64.b64decode(content, validate=True) if encoding == "base64" else \
                content.encode()
        except binascii.Error:
            raise ToolError("content is not valid base64") from None
        if len(data) > WRITE_CAP:
            raise ToolError(f"content is {len(data)} bytes; file_write takes up to {WRITE_CAP}")
        with tempfile.TemporaryDirectory(prefix="banger-mcp-") as tmp:
            local = Path(tmp) / posixpath.basename(guest)
            local.write_bytes(data)
            local.chmod(0o644)
            await api.cp_in(name, str(local), guest)
        return f"wrote {len(data)} bytes to {name}:{guest}"
