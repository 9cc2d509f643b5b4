"""What may cross `banger vm acp` between an editor and an agent in a VM.

ACP lets an agent call the editor: read and write the user's files, run terminals on the host.
The agent runs in a hostile guest, so the bridge tells the editor's `initialize` that the
client has none of those capabilities, and lets through from the agent only responses,
`session/update` notifications and `session/request_permission` requests; any other request
is answered on the editor's behalf with "method not found". Messages are JSON-RPC objects, one
per line; anything else from the agent is dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

MAX_LINE = 16 << 20  # one message; longer ones are dropped whole
AGENT_NOTIFICATIONS = frozenset({"session/update"})
AGENT_REQUESTS = frozenset({"session/request_permission"})
NO_HOST_ACCESS = {"fs": {"readTextFile": False, "writeTextFile": False}, "terminal": False}
METHOD_NOT_FOUND = -32601


class Lines:
    """Newline-delimited messages out of a byte stream, each at most MAX_LINE bytes."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._skipping = False  # inside a line that grew past MAX_LINE

    def feed(self, data: bytes) -> Iterator[bytes]:
        self._buf += data
        while (end := self._buf.find(b"\n")) >= 0:
            line = bytes(self._buf[:end])
            del self._buf[:end + 1]
            if self._skipping:
                self._skipping = False
            elif line.strip() and len(line) <= MAX_LINE:
                yield line
        if len(self._buf) > MAX_LINE:
            self._buf.clear()
            self._skipping = True


def _encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        message = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return message if isinstance(message, dict) else None


def from_editor(line: bytes) -> bytes:
    """The editor's line as the agent gets it: `initialize` offers no host access."""
    message = _parse(line)
    if message is None or message.get("method") != "initialize":
        return line + b"\n"  # the editor is trusted; only its offer is narrowed
    params = message.get("params")
    if isinstance(params, dict):
        params["clientCapabilities"] = NO_HOST_ACCESS
    return _encode(message)


def from_agent(line: bytes) -> tuple[bytes | None, bytes | None]:
    """(what goes to the editor, what goes back to the agent) for one line from the agent."""
    message = _parse(line)
    if message is None:
        return None, None
    method = message.get("method")
    if method is None:  # a response to the editor's request
        return (_encode(message), None) if "id" in message else (None, None)
    if "id" not in message:
        return (_encode(message), None) if method in AGENT_NOTIFICATIONS else (None, None)
    if method in AGENT_REQUESTS:
        return _encode(message), None
    refusal = {"jsonrpc": "2.0", "id": message["id"],
               "error": {"code": METHOD_NOT_FOUND,
                         "message": "banger vm acp: agents in a VM get no editor file or terminal "
                                    "access"}}
    return None, _encode(refusal)


__all__ = ["MAX_LINE", "Lines", "from_agent", "from_editor"]
