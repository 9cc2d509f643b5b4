"""The envelope, shared by client and daemon (docs/rpc.md describes it). Stdlib-only so the CLI
imports stay cheap.

One JSON object per line: the client's request first, then the daemon's progress, info and data
events and one result or error last; later client lines cancel or feed a streaming method.
A message with a "len" field (data from the daemon, stdin from the client) is followed by
exactly that many raw bytes: streams travel as binary, never base64.
Closing the connection cancels the operation.
"""

from __future__ import annotations

import json
import os
from typing import Any

VERSION = 2  # 2: data and stdin payloads are raw bytes after their line ("len"), not base64
MAX_LINE = 16 * 1024 * 1024  # daemon -> client: a result line may be long (lists, shows)
# Client -> daemon: requests are small; a longer line is refused unread.
MAX_REQUEST_LINE = 4 * 1024 * 1024
MAX_DATA = 1024 * 1024  # one binary payload, either way; a longer "len" is refused unread


def new_op_id() -> str:
    return f"op-{os.urandom(4).hex()}"  # os, not secrets: hashlib would slow every CLI start


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """One message; ValueError for anything that is not a JSON object (too deep included)."""
    try:
        value = json.loads(line)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if not isinstance(value, dict):
        raise ValueError("message is not a JSON object")
    return value


def frames(message: dict[str, Any], data: bytes | memoryview) -> list[bytes | memoryview]:
    """Lines and payloads carrying data: split at MAX_DATA, each line says its payload's "len"."""
    view = memoryview(data)
    out: list[bytes | memoryview] = []
    for start in range(0, len(view), MAX_DATA):
        piece = view[start:start + MAX_DATA]
        out += [encode({**message, "len": len(piece)}), piece]
    return out


def payload_length(message: dict[str, Any]) -> int | None:
    """How many raw bytes follow this message (None: none); ValueError for a bad or huge len."""
    if "len" not in message:
        return None
    size = message["len"]
    if type(size) is not int or not 0 <= size <= MAX_DATA:
        raise ValueError(f"data length must be an integer 0..{MAX_DATA}")
    return size
