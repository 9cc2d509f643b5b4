"""One agent connection per running VM, reconnected on demand (e.g. after a daemon restart)."""

from __future__ import annotations

import asyncio
import contextlib

from banger.agent.client import AgentClient, connect_stream
from banger.vmm.base import Backend, VmHandles


async def open_agent(backend: Backend, handles: VmHandles, *, timeout: float) -> AgentClient:
    """Open the backend's byte stream to the agent and say hello, within timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    reader, writer = await backend.open_agent(handles, timeout)
    return await connect_stream(reader, writer, timeout=max(deadline - loop.time(), 0.1))


class AgentPool:
    def __init__(self) -> None:
        self._clients: dict[str, AgentClient] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def adopt(self, vm_id: str, client: AgentClient) -> None:
        self._clients[vm_id] = client

    async def get(self, vm_id: str, backend: Backend, handles: VmHandles, *,
                  timeout: float = 10.0) -> AgentClient:
        async with self._locks.setdefault(vm_id, asyncio.Lock()):
            client = self._clients.get(vm_id)
            if client is not None and client.connected:
                return client
            client = await open_agent(backend, handles, timeout=timeout)
            self._clients[vm_id] = client
            return client

    async def drop(self, vm_id: str) -> None:
        client = self._clients.pop(vm_id, None)
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()
