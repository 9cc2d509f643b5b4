"""`banger mcp --http`'s gate: loopback only, a private token file, Host and bearer checked."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from banger.errors import InvalidArgument
from banger.mcp.http import Gate, load_token, parse_listen


@pytest.mark.parametrize(("listen", "want"), [
    ("127.0.0.1:8765", ("127.0.0.1", 8765)), ("localhost:0", ("127.0.0.1", 0)),
    ("[::1]:9000", ("::1", 9000)), ("127.1.2.3:80", ("127.1.2.3", 80)),
])
def test_loopback_addresses_are_served(listen: str, want: tuple[str, int]) -> None:
    assert parse_listen(listen) == want


@pytest.mark.parametrize("listen", ["0.0.0.0:8765", "192.168.1.10:80", "[::]:80",
                                    "example.com:80", "127.0.0.1", "127.0.0.1:99999"])
def test_anything_else_is_one_error_line(listen: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_listen(listen)
    assert "\n" not in info.value.message


def test_the_token_is_made_private_once_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "token"
    token, made = load_token(path)
    assert made and len(token) >= 32 and path.stat().st_mode & 0o777 == 0o600
    assert load_token(path) == (token, False)
    os.chmod(path, 0o644)
    with pytest.raises(InvalidArgument, match="chmod 600"):
        load_token(path)


def test_the_gate_checks_host_then_token(tmp_path: Path) -> None:
    passed: list[str] = []

    async def app(scope: dict[str, Any], _receive: Any, _send: Any) -> None:
        passed.append(scope["path"])

    gate = Gate(app, "t" * 40, frozenset({"127.0.0.1:8765"}))

    def status(headers: list[tuple[bytes, bytes]]) -> int | None:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "path": "/mcp", "headers": headers}
        asyncio.run(gate(scope, None, send))
        return sent[0]["status"] if sent else None

    good = (b"authorization", b"Bearer " + b"t" * 40)
    assert status([(b"host", b"127.0.0.1:8765")]) == 401
    assert status([(b"host", b"127.0.0.1:8765"), (b"authorization", b"Bearer x")]) == 401
    assert status([(b"host", b"rebound.example:8765"), good]) == 421
    assert status([good]) == 421
    assert status([(b"host", b"127.0.0.1:8765"), good]) is None and passed == ["/mcp"]
