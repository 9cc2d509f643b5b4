"""The web UI's admission rules on their own: tokens, sessions, CSRF, Host, Origin, ui_listen."""

from __future__ import annotations

from pathlib import Path

import pytest

from banger.config import load_config
from banger.config.model import ui_address
from banger.daemon.webui.auth import (
    MAX_SESSIONS,
    SESSION_IDLE,
    TOKEN_TTL,
    Auth,
    allowed_hosts,
    csrf_ok,
    host_ok,
    origin_ok,
)
from banger.errors import ConfigError
from banger.paths import resolve_paths


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_token_works_once_and_only_while_fresh() -> None:
    clock = Clock()
    auth = Auth(clock=clock)
    token = auth.new_token()
    assert len(token) >= 43  # 32 random bytes, urlsafe
    session = auth.redeem(token)
    assert session is not None and auth.session(session.id) is session
    assert auth.redeem(token) is None  # spent
    late = auth.new_token()
    clock.now += TOKEN_TTL + 1
    assert auth.redeem(late) is None
    assert auth.redeem("") is None and auth.redeem("made-up") is None


def test_sessions_expire_when_idle_and_are_bounded() -> None:
    clock = Clock()
    auth = Auth(clock=clock)
    first = auth.redeem(auth.new_token())
    assert first is not None
    clock.now += SESSION_IDLE - 1
    assert auth.session(first.id) is first  # use restarts the idle clock
    clock.now += SESSION_IDLE - 1
    assert auth.session(first.id) is first
    clock.now += SESSION_IDLE + 1
    assert auth.session(first.id) is None
    ids = []
    for _ in range(MAX_SESSIONS + 5):
        clock.now += 1
        s = auth.redeem(auth.new_token())
        assert s is not None
        ids.append(s.id)
    assert auth.session(ids[0]) is None and auth.session(ids[-1]) is not None
    assert auth.session(None) is None


def test_csrf_needs_the_sessions_own_token() -> None:
    auth = Auth()
    a, b = auth.redeem(auth.new_token()), auth.redeem(auth.new_token())
    assert a is not None and b is not None
    assert csrf_ok(a, a.csrf)
    assert not csrf_ok(a, b.csrf) and not csrf_ok(a, None) and not csrf_ok(a, "")


def test_host_and_origin_checks() -> None:
    hosts = allowed_hosts("127.0.0.1", 7777)
    assert host_ok("127.0.0.1:7777", hosts) and host_ok("localhost:7777", hosts)
    for bad in (None, "evil.example:7777", "127.0.0.1:7778", "127.0.0.1", "localhost"):
        assert not host_ok(bad, hosts)
    assert host_ok("[::1]:7000", allowed_hosts("::1", 7000))
    assert origin_ok("http://127.0.0.1:7777", None, "127.0.0.1:7777")
    assert not origin_ok("http://evil.example", None, "127.0.0.1:7777")
    assert not origin_ok("null", "http://127.0.0.1:7777/vms", "127.0.0.1:7777")  # Origin wins
    assert origin_ok(None, "http://127.0.0.1:7777/vms/x", "127.0.0.1:7777")
    assert not origin_ok(None, "http://localhost:7777/", "127.0.0.1:7777")
    assert not origin_ok(None, None, "127.0.0.1:7777")


@pytest.mark.parametrize("listen", ["127.0.0.1:7777", "127.0.0.5:80", "[::1]:7777"])
def test_ui_listen_takes_loopback(listen: str) -> None:
    address, port = ui_address(listen)
    assert port in (7777, 80) and address in ("127.0.0.1", "127.0.0.5", "::1")


@pytest.mark.parametrize("listen", ["0.0.0.0:7777", "[::]:7777", "192.168.1.2:7777",
                                    "localhost:7777", "127.0.0.1", "127.0.0.1:0", "x:y"])
def test_ui_listen_refuses_the_rest_in_one_line(tmp_path: Path, listen: str) -> None:
    paths = resolve_paths({"BANGER_HOME": str(tmp_path)})
    paths.ensure()
    paths.config_file.write_text(f'ui_listen = "{listen}"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(paths)
    assert "ui_listen" in str(caught.value) and "\n" not in str(caught.value)


def test_the_default_ui_address_is_this_users_own_and_answers_only_to_it() -> None:
    """No guest forward ever binds a block's .1 and published ports bind 127.0.0.1: a guest's
    server is never reachable under the UI's host name, so it never receives the UI's cookie."""
    from banger.daemon.webui.auth import allowed_hosts
    from banger.net.plan import allocate_loopback, own_loopback

    assert own_loopback(0) == "127.77.0.1" and own_loopback(1000) == "127.81.232.1"
    assert allocate_loopback(set(), 1000) != own_loopback(1000)
    assert allowed_hosts("127.81.232.1", 7777) == {"127.81.232.1:7777"}
    assert allowed_hosts("127.0.0.1", 7777) == {"127.0.0.1:7777", "localhost:7777"}
