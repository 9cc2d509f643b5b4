"""file_read (the guest's head, through exec, bounded in the guest) and file_write (one file in
through `vm cp`)."""

from __future__ import annotations

import base64
import binascii
import posixpath
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from banger.client import AsyncClient
from banger.mcp.common import FILE_CAP, MAX_FILE_CAP, WRITE_CAP, bounded, one_line_errors
from banger.mcp.vm_tools import VmName
from banger.textsafe import one_line

GuestPath = Annotated[str, Field(description="Absolute path in the guest", min_length=2,
                                 max_length=4096)]
Encoding = Literal["utf-8", "base64"]


def _guest_path(path: str) -> str:
    clean = posixpath.normpath(path)
    if not clean.startswith("/") or clean == "/":
        raise ToolError(f"give an absolute guest file path, not {path[:200]!r}")
    return clean


# test -f follows links and refuses directories, devices and FIFOs before anything is read;
# stat's line is the real size (for the "truncated" note), then at most cap+1 bytes of the file.
READ_SCRIPT = ('test -e "$1" || exit 2; test -f "$1" || exit 3; '
               'stat -L -c %s -- "$1" || exit 4; exec head -c "$2" -- "$1"')
READ_REFUSED = {2: "no such file", 3: "not a regular file (a directory, device or FIFO); "
                                      "file_read reads one file"}
SIZE_LINE = 24  # digits and newline of stat's answer, at most
READ_TIMEOUT = 300.0


def _parse_read(out: bytes, dropped: int, cap: int) -> tuple[bytes, int]:
    """stat's size line then the file's first bytes -> (the first cap bytes, how many more)."""
    line, sep, data = out.partition(b"\n")
    if not sep or not line.isdigit() or len(line) > SIZE_LINE or dropped:
        raise ToolError("the guest answered file_read with something else than a size and "
                        "the file's bytes")
    if len(data) <= cap:  # head met the end of the file before cap+1 bytes: nothing more
        return data, 0
    return data[:cap], max(int(line) - cap, 1)  # at least 1: it grew, or stat said 0 (/proc)


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
        # through exec, not `vm cp`: head stops in the guest, so a 30 GiB file or /usr never
        # leaves it (cp would land it whole in $TMPDIR, perhaps a tmpfs, before the cap)
        got = await api.exec_capture(name, ["sh", "-c", READ_SCRIPT, "sh", guest, str(cap + 1)],
                                     limit=SIZE_LINE + cap + 1, env={"LC_ALL": "C"},
                                     timeout=READ_TIMEOUT)
        if got.timed_out:
            raise ToolError(f"reading {name}:{guest[:200]} took over {READ_TIMEOUT:g} s")
        if got.code:
            why = READ_REFUSED.get(got.code) or one_line(
                got.stderr.decode("utf-8", errors="replace"), 200) or f"exit code {got.code}"
            raise ToolError(f"cannot read {name}:{guest[:200]}: {why}")
        data, more = _parse_read(got.stdout, got.stdout_dropped, cap)
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
            # Into the parent under its own name: a directory at `guest` is an error, not a
            # file written inside it (cp's rule for an existing directory).
            await api.cp_in(name, str(local), posixpath.dirname(guest) or "/")
        return f"wrote {len(data)} bytes to {name}:{guest}"
