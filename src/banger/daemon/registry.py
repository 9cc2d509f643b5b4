"""The method table: name -> typed params + async handler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

if TYPE_CHECKING:
    from banger.daemon.context import Context

P = TypeVar("P", bound=msgspec.Struct)
Handler = Callable[["Context", Any], Awaitable[Any]]


class NoParams(msgspec.Struct, forbid_unknown_fields=True):
    pass


@dataclass(frozen=True)
class Method:
    name: str
    params: type[msgspec.Struct]
    handler: Handler
    long: bool  # long operations are recorded in the operations table


METHODS: dict[str, Method] = {}


def method(
    name: str, params: type[P], *, long: bool = False
) -> Callable[[Callable[[Context, P], Awaitable[Any]]], Callable[[Context, P], Awaitable[Any]]]:
    def register(fn: Callable[[Context, P], Awaitable[Any]]) -> Callable[[Context, P], Awaitable[Any]]:
        if name in METHODS:
            raise RuntimeError(f"RPC method {name} registered twice")
        METHODS[name] = Method(name, params, fn, long)
        return fn

    return register
