"""`AsyncClient`: the same calls for asyncio code, each run on a worker thread.

Every await uses its own blocking `Client` (its own connection) on a thread of the client's own
pool (up to max_calls at once), so cancelling the awaiting task cancels that operation in the
daemon, as Ctrl-C does for the CLI. Callbacks (progress, output) run on the worker thread.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Concatenate, ParamSpec, TypeVar

import msgspec

from banger.client.base import ProgressFn
from banger.client.sync import Client
from banger.paths import Paths, resolve_paths
from banger.rpc.methods import Method

A = ParamSpec("A")
T = TypeVar("T")
P = TypeVar("P", bound=msgspec.Struct)


def _wrap(fn: Callable[Concatenate[Client, A], T]
          ) -> Callable[Concatenate[AsyncClient, A], Coroutine[Any, Any, T]]:
    async def method(self: AsyncClient, /, *args: A.args, **kwargs: A.kwargs) -> T:
        return await self.run(fn, *args, **kwargs)

    method.__name__, method.__doc__ = fn.__name__, fn.__doc__
    return method


class AsyncClient:
    def __init__(self, paths: Paths | None = None, *, autostart: bool = True,
                 max_calls: int = 64) -> None:
        self.paths = paths or resolve_paths()
        self.autostart = autostart
        # Its own threads: the loop's default pool has cpus + 4, and a few long execs or
        # session logs would queue every other call behind them.
        self._pool = ThreadPoolExecutor(max_calls, thread_name_prefix="banger-client")

    async def run(self, fn: Callable[Concatenate[Client, A], T], /, *args: A.args,
                  **kwargs: A.kwargs) -> T:
        """fn(a fresh Client, *args, **kwargs) on a worker thread; cancellable."""
        sync = Client(self.paths, autostart=self.autostart)
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool, functools.partial(fn, sync, *args, **kwargs))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            sync.cancel()  # the daemon stops the operation; the worker thread then returns
            raise

    async def call(self, method: Method[P], params: P, *,
                   on_progress: ProgressFn | None = None) -> Any:
        """The method's result as plain JSON values (see Client.call)."""
        return await self.run(lambda c: c.call(method, params, on_progress=on_progress))

    async def call_as(self, method: Method[P], params: P, result: type[T], *,
                      on_progress: ProgressFn | None = None) -> T:
        return await self.run(lambda c: c.call_as(method, params, result,
                                                  on_progress=on_progress))

    vm_create = _wrap(Client.vm_create)
    vm_list = _wrap(Client.vm_list)
    vm_show = _wrap(Client.vm_show)
    vm_start = _wrap(Client.vm_start)
    vm_stop = _wrap(Client.vm_stop)
    vm_restart = _wrap(Client.vm_restart)
    vm_kill = _wrap(Client.vm_kill)
    vm_delete = _wrap(Client.vm_delete)
    vm_prune = _wrap(Client.vm_prune)
    vm_set = _wrap(Client.vm_set)
    vm_logs = _wrap(Client.vm_logs)
    vm_ports = _wrap(Client.vm_ports)
    vm_forward = _wrap(Client.vm_forward)
    cp_in = _wrap(Client.cp_in)
    cp_out = _wrap(Client.cp_out)
    exec = _wrap(Client.exec)
    exec_capture = _wrap(Client.exec_capture)
    session_start = _wrap(Client.session_start)
    session_list = _wrap(Client.session_list)
    session_show = _wrap(Client.session_show)
    session_logs = _wrap(Client.session_logs)
    session_send = _wrap(Client.session_send)
    session_stop = _wrap(Client.session_stop)
    session_kill = _wrap(Client.session_kill)
    session_rm = _wrap(Client.session_rm)
    workspace_prepare = _wrap(Client.workspace_prepare)
    workspace_export = _wrap(Client.workspace_export)
    vm_fork = _wrap(Client.vm_fork)
    snapshot_create = _wrap(Client.snapshot_create)
    snapshot_list = _wrap(Client.snapshot_list)
    snapshot_delete = _wrap(Client.snapshot_delete)
    snapshot_restore = _wrap(Client.snapshot_restore)
    image_catalog = _wrap(Client.image_catalog)
    image_list = _wrap(Client.image_list)
    image_show = _wrap(Client.image_show)
    image_pull = _wrap(Client.image_pull)
    image_delete = _wrap(Client.image_delete)
    kernel_catalog = _wrap(Client.kernel_catalog)
    kernel_list = _wrap(Client.kernel_list)
    kernel_pull = _wrap(Client.kernel_pull)
    template_list = _wrap(Client.template_list)
    template_build = _wrap(Client.template_build)
    pool_set = _wrap(Client.pool_set)
    pool_list = _wrap(Client.pool_list)
    daemon_status = _wrap(Client.daemon_status)
