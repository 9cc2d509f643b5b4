"""Commands in guests: stream stdout/stderr to callbacks, or capture both with a cap."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from banger.client.base import BaseClient

if TYPE_CHECKING:
    from banger.rpc.client import Call
    from banger.rpc.methods.vm import ExecResult

OutputFn = Callable[[bytes], None]
KILL_GRACE = 5.0  # after a timeout's SIGKILL, seconds before the connection is dropped


class Captured(msgspec.Struct):  # a Struct, not a dataclass: the CLI imports this module
    """A finished command's status and output; *_dropped counts bytes past the cap."""

    exit_code: int | None
    signal: int | None
    code: int  # the exit code, or 128 + signal
    stdout: bytes
    stderr: bytes
    stdout_dropped: int = 0
    stderr_dropped: int = 0
    timed_out: bool = False


class _Capped:
    def __init__(self, limit: int) -> None:
        self.limit, self.data, self.dropped = limit, bytearray(), 0

    def __call__(self, chunk: bytes) -> None:
        room = max(self.limit - len(self.data), 0)
        self.data += chunk[:room]
        self.dropped += max(len(chunk) - room, 0)


def _feed(call: Call, data: bytes, lock: threading.Lock) -> None:
    with lock, contextlib.suppress(OSError):
        call.send_data(data)
        call.send({"type": "stdin_eof"})


class ExecApi(BaseClient):
    def exec(self, vm: str, argv: list[str], *, stdin: bytes | None = None,
             cwd: str | None = None, env: dict[str, str] | None = None, user: str | None = None,
             on_stdout: OutputFn | None = None, on_stderr: OutputFn | None = None,
             timeout: float | None = None) -> ExecResult:
        """Run argv in a running VM; output chunks go to the callbacks as they arrive.

        stdin: bytes fed to the command (then EOF); None gives it no stdin. timeout: seconds,
        then SIGKILL (the result then has signal 9). The command's own exit code is returned,
        never raised; daemon errors (unknown VM, not running) raise the banger.errors family.
        """
        return self._exec(vm, argv, stdin, cwd, env, user, on_stdout, on_stderr, timeout)[0]

    def _exec(self, vm: str, argv: list[str], stdin: bytes | None, cwd: str | None,
              env: dict[str, str] | None, user: str | None, on_stdout: OutputFn | None,
              on_stderr: OutputFn | None, timeout: float | None) -> tuple[ExecResult, bool]:
        from banger.rpc.methods.vm import VM_EXEC, ExecParams, ExecResult

        params = ExecParams(vm, argv=argv, env=env or {}, cwd=cwd, user=user,
                            stdin=stdin is not None)
        call = self.start(VM_EXEC, params)
        lock = threading.Lock()
        fired = threading.Event()
        timers = self._watchdog(call, lock, timeout, fired)
        try:
            if stdin is not None:  # a thread: a big input must not block reading the output
                threading.Thread(target=_feed, args=(call, stdin, lock), daemon=True).start()
            for event in call.events():
                if event.get("type") != "data":
                    continue
                sink = on_stdout if event.get("stream") == "stdout" else on_stderr
                if sink is not None:
                    sink(event["data"])
            result: Any = call.result
        except KeyboardInterrupt:
            call.cancel()
            raise
        finally:
            for timer in timers:
                timer.cancel()
            self.finish(call)
        return msgspec.convert(result, ExecResult), fired.is_set()

    def _watchdog(self, call: Call, lock: threading.Lock,
                  timeout: float | None, fired: threading.Event) -> list[threading.Timer]:
        if timeout is None:
            return []

        def kill() -> None:
            fired.set()
            with lock, contextlib.suppress(OSError):
                call.send({"type": "signal", "signal": int(signal.SIGKILL)})

        def drop() -> None:  # a guest that ignores the kill: the daemon cancels on hang-up
            with contextlib.suppress(OSError):
                call.sock.shutdown(2)

        timers = [threading.Timer(timeout, kill), threading.Timer(timeout + KILL_GRACE, drop)]
        for timer in timers:
            timer.daemon = True
            timer.start()
        return timers

    def exec_capture(self, vm: str, argv: list[str], *, limit: int = 1024 * 1024,
                     stdin: bytes | None = None, cwd: str | None = None,
                     env: dict[str, str] | None = None, user: str | None = None,
                     timeout: float | None = None) -> Captured:
        """Run argv and keep at most `limit` bytes of each stream (the rest is counted)."""
        out, err = _Capped(limit), _Capped(limit)
        res, killed = self._exec(vm, argv, stdin, cwd, env, user, out, err, timeout)
        return Captured(res.exit_code, res.signal, res.code, bytes(out.data), bytes(err.data),
                        out.dropped, err.dropped, timed_out=killed)
