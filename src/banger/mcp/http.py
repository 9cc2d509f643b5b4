"""`banger mcp --http`: streamable HTTP on a loopback address, behind a bearer token.

The token lives in a 0600 file in the runtime dir (made and printed once). Every request must
name this listener in Host (a page under another DNS name reaching the port is refused: DNS
rebinding) and carry `Authorization: Bearer TOKEN`; both are checked before the SDK sees it.
"""

from __future__ import annotations

import errno
import hmac
import ipaddress
import os
import secrets
import socket
import stat
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from banger.errors import InvalidArgument

PATH = "/mcp"
TOKEN_BYTES = 32
MAX_BODY = 16 * 1024 * 1024  # the SDK reads a whole body first; file_write's 8 MiB in base64 fits


def parse_listen(value: str) -> tuple[str, int]:
    """ADDR:PORT on loopback only ([::1]:PORT for IPv6; localhost means 127.0.0.1)."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
        raise InvalidArgument(f"--http wants ADDR:PORT such as 127.0.0.1:8765, not {value[:100]!r}")
    host = host.strip("[]")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise InvalidArgument(f"--http wants a loopback IP address, not {host[:100]!r}") from None
    if not address.is_loopback:
        raise InvalidArgument(f"refusing to serve MCP on {address}: it is not a loopback address "
                              "(anyone who reaches it could run commands in your VMs)")
    return str(address), int(port_text)


def read_private_file(path: Path, limit: int = 4096) -> str:
    """A token file's text: opened without following a link, then checked on that same open
    file (regular, ours, nobody else can read it), so nothing can be swapped in between."""
    mine = f"{path} is not a regular file of yours; remove it"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:  # ELOOP: a symbolic link; ENXIO and the like: a socket or worse
        raise InvalidArgument(mine if exc.errno == errno.ELOOP else
                              f"cannot read {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            raise InvalidArgument(mine)
        if st.st_mode & 0o077:
            raise InvalidArgument(f"{path} is readable by others (mode {st.st_mode & 0o777:o}); "
                                  f"run `chmod 600 {path}` or remove it")
        return f.read(limit).decode("utf-8", errors="replace")


def load_token(path: Path, *, renew: bool = False) -> tuple[str, bool]:
    """The token in path (a 0600 file of ours), made if absent or renew; True when just made."""
    if renew:  # unlink removes a link itself, never its target; O_EXCL below makes it anew
        path.unlink(missing_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
    except FileExistsError:
        token = read_private_file(path).strip()
        if len(token) < 32 or not token.isascii() or not token.isprintable():
            raise InvalidArgument(f"{path} holds no usable token (32+ characters); remove it "
                                  "and a new one is made") from None
        return token, False
    token = secrets.token_urlsafe(TOKEN_BYTES)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, True


class Gate:
    """ASGI middleware: Host names this listener and the bearer token matches, or 4xx."""

    def __init__(self, app: Any, token: str, hosts: frozenset[str]) -> None:
        self.app, self.hosts = app, hosts
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":  # never gated below: closed before it is accepted
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            raise ValueError(f"banger mcp serves HTTP only, not {scope['type']!r}")
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"").decode("latin-1").lower()
        if host not in self.hosts:
            await _refuse(send, 421, "wrong Host header: use the address banger mcp printed")
            return
        if not hmac.compare_digest(headers.get(b"authorization", b""), self.expected):
            await _refuse(send, 401, "missing or wrong bearer token (see banger mcp --help)")
            return
        await self.app(scope, receive, send)


async def _refuse(send: Any, status: int, why: str) -> None:
    body = why.encode() + b"\n"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode()),
                            (b"www-authenticate", b"Bearer")]})
    await send({"type": "http.response.body", "body": body})


def asgi_app(host: str, hosts: frozenset[str], token: str) -> Gate:
    """The SDK's streamable HTTP app (its Host/Origin checks, bodies capped) behind the Gate."""
    from mcp.server.transport_security import TransportSecuritySettings

    from banger.mcp.server import build

    security = TransportSecuritySettings(allowed_hosts=sorted(hosts),
                                         allowed_origins=[f"http://{h}" for h in sorted(hosts)])
    app = build().streamable_http_app(streamable_http_path=PATH, transport_security=security,
                                      host=host, max_request_body_size=MAX_BODY)
    return Gate(app, token, hosts)


def serve(listen: str, token_file: Path, *, renew: bool = False) -> None:
    import anyio
    import uvicorn

    host, port = parse_listen(listen)
    token, made = load_token(token_file, renew=renew)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))  # bound here so port 0 works and the real port is printed
    port = sock.getsockname()[1]
    netloc = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
    hosts = {netloc}
    if host == "127.0.0.1":
        hosts.add(f"localhost:{port}")
    config = uvicorn.Config(asgi_app(host, frozenset(hosts), token), log_level="warning",
                            lifespan="on")
    if made:
        print(f"banger mcp: new token (saved in {token_file}): {token}", file=sys.stderr)
    print(f"banger mcp: serving http://{netloc}{PATH} (token in {token_file})",
          file=sys.stderr, flush=True)
    anyio.run(uvicorn.Server(config).serve, [sock])
