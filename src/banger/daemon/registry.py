"""The daemon's method table: each contract method (banger.rpc.methods) and its async handler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from banger.rpc.methods import Method
from banger.rpc.methods.table import CONTRACT, TEST_METHODS

if TYPE_CHECKING:
    from banger.daemon.context import Context

P = TypeVar("P", bound=msgspec.Struct)
Handler = Callable[["Context", Any], Awaitable[Any]]


@dataclass(frozen=True)
class Registered:
    method: Method[Any]
    handler: Handler


METHODS: dict[str, Registered] = {}


def check_handler(spec: Method[Any], fn: Handler) -> None:
    """A handler serves exactly a contract method, with the result the contract names."""
    if CONTRACT.get(spec.name, TEST_METHODS.get(spec.name)) is not spec:
        raise RuntimeError(f"RPC method {spec.name} is not in the contract (banger.rpc.methods)")
    returns = getattr(fn, "__annotations__", {}).get("return")
    if returns != spec.result:
        raise RuntimeError(f"handler of {spec.name} returns {returns!r}; the contract says "
                           f"{spec.result!r}")


def method(
    spec: Method[P],
) -> Callable[[Callable[[Context, P], Awaitable[Any]]], Callable[[Context, P], Awaitable[Any]]]:
    def register(fn: Callable[[Context, P], Awaitable[Any]]) -> Callable[[Context, P], Awaitable[Any]]:
        check_handler(spec, fn)
        if spec.name in METHODS:
            raise RuntimeError(f"RPC method {spec.name} registered twice")
        METHODS[spec.name] = Registered(spec, fn)
        return fn

    return register
