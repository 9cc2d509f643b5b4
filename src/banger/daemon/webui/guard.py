"""The one gate every request passes: Host, session, Origin and CSRF checks, security headers.

A pure ASGI middleware, so no route can forget a check: pages without a session get only the
login hint, and every request that is not GET/HEAD needs a session, a same-origin Origin (or
Referer) and the session's CSRF token (header `X-CSRF-Token` or form field `csrf`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from banger.daemon.webui.auth import COOKIE, Auth, Session, csrf_ok, host_ok, origin_ok

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY = 64 * 1024  # forms here are a few fields; anything bigger is refused unread
OPEN_PATHS = ("/login", "/static/", "/assets/")  # no data behind these
SAFE_METHODS = ("GET", "HEAD")
CSP = ("default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    # same-origin, not no-referrer: with no-referrer a browser's form POST says `Origin: null`
    # and the Origin check could not tell our pages from a sandboxed frame anywhere.
    (b"referrer-policy", b"same-origin"),
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _cookie(scope: Scope) -> str | None:
    raw = _header(scope, b"cookie")
    if not raw:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except CookieError:
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel else None


async def _plain(send: Send, status: int, text: str) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"cache-control", b"no-store"), *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": text.encode()})


class Guard:
    def __init__(self, app: App, auth: Auth, hosts: frozenset[str],
                 login_page: Callable[[], bytes]) -> None:
        self.app = app
        self.auth = auth
        self.hosts = hosts
        self.login_page = login_page  # the only thing shown without a session

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket" and not self._websocket_ok(scope):
                await send({"type": "websocket.close", "code": 1008})  # HTTP 403 to the client
                return
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host")
        if not host_ok(host, self.hosts):
            await _plain(send, 403, "refused: this is banger's UI, reached under another name")
            return
        assert host is not None
        path: str = scope.get("path", "")
        session = self.auth.session(_cookie(scope))
        scope["banger_session"] = session
        if scope["method"] not in SAFE_METHODS:
            body = await self._check_change(scope, receive, send, session, host)
            if body is None:
                return
            receive = _replay(body, receive)
        elif session is None and not path.startswith(OPEN_PATHS):
            await self._login_hint(send)
            return
        await self.app(scope, receive, _with_headers(send))

    def _websocket_ok(self, scope: Scope) -> bool:
        """A websocket needs what a change needs: Host, session, its own Origin (browsers always
        send one on websockets, so cross-site pages are refused) and the CSRF token (`csrf` in
        the query: a browser's websocket cannot carry a custom header)."""
        host = _header(scope, b"host")
        if not host_ok(host, self.hosts) or host is None:
            return False
        session = self.auth.session(_cookie(scope))
        if session is None or not origin_ok(_header(scope, b"origin"), None, host):
            return False
        query = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1"))
        sent = query.get("csrf")
        scope["banger_session"] = session
        return csrf_ok(session, sent[0] if sent else None)

    async def _check_change(self, scope: Scope, receive: Receive, send: Send,
                            session: Session | None, host: str) -> bytes | None:
        """The request body when the change may go ahead; None once it was refused."""
        if session is None:
            await _plain(send, 403, "refused: not logged in; run `banger ui` to log in")
            return None
        if not origin_ok(_header(scope, b"origin"), _header(scope, b"referer"), host):
            await _plain(send, 403, "refused: the request did not come from this UI's pages")
            return None
        body = await _read_body(receive)
        if body is None:
            await _plain(send, 413, "refused: request body too large")
            return None
        sent = _header(scope, b"x-csrf-token")
        ctype = _header(scope, b"content-type") or ""
        if sent is None and ctype.startswith("application/x-www-form-urlencoded"):
            values = parse_qs(body.decode("latin-1")).get("csrf")
            sent = values[0] if values else None
        if not csrf_ok(session, sent):
            await _plain(send, 403, "refused: missing or wrong CSRF token; reload the page")
            return None
        return body

    async def _login_hint(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"text/html; charset=utf-8"),
                                (b"cache-control", b"no-store"), *SECURITY_HEADERS]})
        await send({"type": "http.response.body", "body": self.login_page()})


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunk = bytes(message.get("body", b""))
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, original: Receive) -> Receive:
    """The body read for the CSRF check, handed to the app as if unread."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await original()  # what comes next: a disconnect

    return receive


def _with_headers(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            names = {k.lower() for k, _ in message.get("headers", [])}
            extra = [(k, v) for k, v in SECURITY_HEADERS if k not in names]
            if b"cache-control" not in names:
                extra.append((b"cache-control", b"no-store"))
            message["headers"] = [*message.get("headers", []), *extra]
        await send(message)

    return wrapped
