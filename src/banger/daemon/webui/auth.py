"""Who may use the web UI: one-time login tokens, session cookies, CSRF tokens, Host and Origin.

Pure logic over plain values (no Starlette here) so the rules are tested on their own. Sessions
live only in the daemon's memory: a daemon restart logs every browser out.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

TOKEN_TTL = 120.0  # a login URL works once, for two minutes
SESSION_IDLE = 12 * 3600.0  # a session unused for 12 hours is forgotten
MAX_TOKENS = 32  # unused tokens kept; older ones are dropped (bounded memory)
MAX_SESSIONS = 64
COOKIE = "banger_session"


@dataclass
class Session:
    id: str
    csrf: str
    last_seen: float


@dataclass
class Auth:
    """Login tokens and sessions of one UI server; `clock` is injectable for tests."""

    clock: Callable[[], float] = time.monotonic
    _tokens: dict[str, float] = field(default_factory=dict)  # token -> expiry
    _sessions: dict[str, Session] = field(default_factory=dict)

    def new_token(self) -> str:
        now = self.clock()
        self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
        while len(self._tokens) >= MAX_TOKENS:
            self._tokens.pop(next(iter(self._tokens)))
        token = secrets.token_urlsafe(32)
        self._tokens[token] = now + TOKEN_TTL
        return token

    def redeem(self, token: str) -> Session | None:
        """A new session for a valid unused token; the token is spent either way."""
        expiry = self._tokens.pop(token, None) if token else None
        now = self.clock()
        if expiry is None or expiry <= now:
            return None
        self._expire(now)
        while len(self._sessions) >= MAX_SESSIONS:  # the least recently used goes
            oldest = min(self._sessions.values(), key=lambda s: s.last_seen)
            self._sessions.pop(oldest.id)
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now)
        self._sessions[session.id] = session
        return session

    def session(self, cookie: str | None) -> Session | None:
        """The live session a cookie names (its idle clock restarts), or None."""
        if not cookie:
            return None
        now = self.clock()
        found = self._sessions.get(cookie)
        if found is None or now - found.last_seen > SESSION_IDLE:
            self._sessions.pop(cookie, None)
            return None
        found.last_seen = now
        return found

    def _expire(self, now: float) -> None:
        self._sessions = {k: s for k, s in self._sessions.items()
                          if now - s.last_seen <= SESSION_IDLE}


def csrf_ok(session: Session, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(session.csrf.encode(), (sent or "").encode())


def allowed_hosts(address: str, port: int) -> frozenset[str]:
    """Host header values this server answers to: its own address and port (and localhost when
    that address is 127.0.0.1). Cookies ignore ports: any other name would share them."""
    shown = f"[{address}]" if ":" in address else address
    extra = {f"localhost:{port}"} if address == "127.0.0.1" else set()
    return frozenset({f"{shown}:{port}", *extra})


def host_ok(host: str | None, allowed: frozenset[str]) -> bool:
    """DNS rebinding defence: a page under another name reaching this port is refused."""
    return host is not None and host.lower() in allowed


def origin_ok(origin: str | None, referer: str | None, host: str) -> bool:
    """A state change must come from a page of this UI: Origin, else Referer, names this host."""
    own = f"http://{host.lower()}"
    if origin is not None:
        return origin.lower() == own
    if referer:
        parts = urlsplit(referer)
        return f"{parts.scheme}://{parts.netloc}".lower() == own
    return False
