"""The envelope, shared by client and daemon (docs/rpc.md describes it). Stdlib-only so the CLI
imports stay cheap.

One JSON object per line: the client's request first, then the daemon's progress, info and data
events and one result or error last; later client lines cancel or feed a streaming method.
Closing the connection cancels the operation.
"""

from __future__ import annotations

import json
import os
from typing import Any

VERSION = 1
MAX_LINE = 16 * 1024 * 1024  # daemon -> client (data events carry guest output)
# Client -> daemon: requests and input chunks are small; a longer line is refused unread.
MAX_REQUEST_LINE = 4 * 1024 * 1024


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
