"""banger's Python API: `Client` (blocking) and `AsyncClient` (asyncio) over the one RPC client.

Every call is a contract method (`banger.rpc.methods`) sent through `banger.rpc.client`; the
typed helpers build its params struct and decode its result into the contract's struct. Errors
are the `banger.errors` family, as the CLI shows them. See docs/api.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from banger.client.execs import Captured
from banger.client.sync import Client

if TYPE_CHECKING:
    from banger.client.aio import AsyncClient

__all__ = ["AsyncClient", "Captured", "Client"]


def __getattr__(name: str) -> object:
    if name == "AsyncClient":  # asyncio only for those who ask: the CLI imports this package
        from banger.client.aio import AsyncClient

        return AsyncClient
    raise AttributeError(name)
