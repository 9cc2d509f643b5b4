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
                                    "example.com:80", "127.0.0.1", "127.0.0.1:99999",
                                    "127.0.0.1:\u00b2"])
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


def test_a_token_file_swapped_for_a_link_after_a_check_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "other"  # say, a file of ours that must not become the token
    other.write_text("s" * 40 + "\n")
    other.chmod(0o600)
    path = tmp_path / "token"
    path.symlink_to(other)
    checked = other.stat()  # what a check made before the swap saw: a private regular file
    monkeypatch.setattr(Path, "lstat", lambda self: checked)
    with pytest.raises(InvalidArgument, match="not a regular file of yours") as info:
        load_token(path)
    assert "\n" not in info.value.message


def test_a_fifo_as_the_token_file_is_refused_without_blocking(tmp_path: Path) -> None:
    path = tmp_path / "token"
    os.mkfifo(path, 0o600)
    with pytest.raises(InvalidArgument, match="not a regular file of yours"):
        load_token(path)


@pytest.mark.parametrize("kind", ["websocket", "webtransport"])
def test_the_gate_lets_no_other_scope_through(kind: str) -> None:
    reached: list[str] = []

    async def app(scope: dict[str, Any], _receive: Any, _send: Any) -> None:
        reached.append(scope["type"])

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    gate = Gate(app, "t" * 40, frozenset({"127.0.0.1:8765"}))
    scope = {"type": kind, "path": "/mcp", "headers": [(b"host", b"127.0.0.1:8765")]}
    if kind == "websocket":  # refused before accept: the server answers 403
        asyncio.run(gate(scope, None, send))
        assert sent == [{"type": "websocket.close", "code": 1008}]
    else:
        with pytest.raises(ValueError, match="HTTP only"):
            asyncio.run(gate(scope, None, send))
    asyncio.run(gate({"type": "lifespan"}, None, send))
    assert reached == ["lifespan"]


def test_a_new_token_replaces_the_old_one_and_never_writes_through_a_link(tmp_path: Path) -> None:
    path = tmp_path / "token"
    old, _ = load_token(path)
    new, made = load_token(path, renew=True)
    assert made and new != old and load_token(path) == (new, False)
    target = tmp_path / "target"
    target.write_text("keep\n")
    path.unlink()
    path.symlink_to(target)
    fresh, made = load_token(path, renew=True)
    assert made and not path.is_symlink() and target.read_text() == "keep\n"
    assert path.stat().st_mode & 0o777 == 0o600 and load_token(path) == (fresh, False)


def test_a_request_body_is_read_up_to_16_mib() -> None:
    """The SDK reads a body whole before any tool's schema caps it; file_write's 8 MiB in
    base64 (11 MiB) must pass, more must not (413)."""
    from starlette.testclient import TestClient

    from banger.mcp.http import MAX_BODY, asgi_app

    token = "t" * 40
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json",
               "accept": "application/json, text/event-stream"}
    with TestClient(asgi_app("127.0.0.1", frozenset({"testserver"}), token)) as client:
        assert client.post("/mcp", content=b"0" * (12 << 20), headers=headers).status_code == 400
        big = client.post("/mcp", content=b"0" * (MAX_BODY + 1), headers=headers)
        assert big.status_code == 413
