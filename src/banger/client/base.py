"""The generic layer: a contract method and its params in, plain JSON or a typed result out."""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from banger.errors import Cancelled
from banger.paths import Paths, resolve_paths
from banger.rpc import client as wire_client
from banger.rpc.methods import Method

P = TypeVar("P", bound=msgspec.Struct)
T = TypeVar("T")

# A daemon event: {"type": "progress", "stage": str, "fraction": float | None, "message": str}
# or {"type": "info", "message": str}; long operations (create, pulls, cp, ...) send them.
ProgressFn = Callable[[dict[str, Any]], None]


class BaseClient:
    """Talks to this user's daemon (started on first use unless autostart=False)."""

    def __init__(self, paths: Paths | None = None, *, autostart: bool = True) -> None:
        self.paths = paths or resolve_paths()
        self.rpc = wire_client.Client(self.paths, autostart=autostart)
        # weak: the CLI closes calls it start()ed itself, without finish()
        self._live: weakref.WeakSet[wire_client.Call] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._cancelled = False

    def start(self, method: Method[P], params: P) -> wire_client.Call:
        """Send a request and hand back the in-flight call (streams: exec, logs, attach)."""
        with self._lock:
            if self._cancelled:  # cancel() came before this call started
                raise Cancelled(f"{method.name} cancelled")
        call = self.rpc.start(method, params)
        with self._lock:
            self._live.add(call)
        return call

    def finish(self, call: wire_client.Call) -> None:
        with self._lock:
            self._live.discard(call)
        call.close()

    def call(self, method: Method[P], params: P, *, on_progress: ProgressFn | None = None) -> Any:
        """The method's result as plain JSON values; progress events go to on_progress."""
        call = self.start(method, params)
        try:
            for event in call.events():
                if on_progress is not None and event.get("type") in ("progress", "info"):
                    on_progress(event)
            return call.result
        except KeyboardInterrupt:
            call.cancel()
            raise
        finally:
            self.finish(call)

    def call_as(self, method: Method[P], params: P, result: type[T], *,
                on_progress: ProgressFn | None = None) -> T:
        """The method's result decoded into `result` (a contract struct, list[...] of one, ...)."""
        return msgspec.convert(self.call(method, params, on_progress=on_progress), result)

    def cancel(self) -> None:
        """Cancel every call in flight from this client (from another thread): the daemon stops
        each operation as it does for a CLI's Ctrl-C, and the waiting call raises. Later calls on
        this client raise Cancelled: make a new one."""
        with self._lock:
            self._cancelled = True
            live = list(self._live)
        for call in live:
            call.cancel()
            with contextlib.suppress(OSError):
                call.sock.shutdown(2)  # SHUT_RDWR: the blocked reader wakes up
