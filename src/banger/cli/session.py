"""Shared CLI plumbing: paths, the daemon client (banger.client, the API scripts use too),
progress rendering for long operations."""

from __future__ import annotations

import sys
from typing import Any, TypeVar

import msgspec

from banger.client import Client
from banger.paths import Paths, resolve_paths
from banger.rpc.methods import Method
from banger.textsafe import one_line

P = TypeVar("P", bound=msgspec.Struct)


def paths() -> Paths:
    return resolve_paths()


def client(*, autostart: bool = True) -> Client:
    return Client(paths(), autostart=autostart)  # the one client: the CLI is its first user


def call(method: Method[P], params: P) -> Any:
    """The method's result as plain JSON values."""
    return client().call(method, params)


def call_with_progress(method: Method[P], params: P, *, quiet: bool = False) -> Any:
    """Run a long operation, drawing its stages as a progress display on a terminal."""
    if quiet or not sys.stderr.isatty():
        return client().call(method, params, on_progress=None if quiet else _PlainProgress())
    from banger.cli.progress_view import ProgressView

    with ProgressView() as view:
        return client().call(method, params, on_progress=view.update)


class _PlainProgress:
    """Progress for logs and pipes: one line per stage or message, no bars."""

    def __init__(self) -> None:
        self.last: tuple[str, str] | None = None

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("type") == "info":
            print(one_line(str(event.get("message", ""))), file=sys.stderr)
            return
        if event.get("type") != "progress":
            return
        stage, message = one_line(str(event.get("stage")), 60), one_line(str(event.get("message") or ""))
        if self.last is not None and (stage == self.last[0] and (not message or
                                                                   message == self.last[1])):
            return
        self.last = (stage, message)
        print(f"{stage}{': ' + message if message else ''}", file=sys.stderr)
