"""Blocking RPC client used by the CLI; starts the daemon on first use."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from banger.errors import BangerError, Unavailable
from banger.paths import HOME_ENV, Paths, check_private_dir
from banger.rpc import wire
from banger.rpc.methods import Method
from banger.rpc.peer import check_daemon_peer, check_socket_file

if TYPE_CHECKING:
    import subprocess

P = TypeVar("P", bound=msgspec.Struct)

ProgressFn = Callable[[dict[str, Any]], None]
START_TIMEOUT = 20.0


class Call:
    """One in-flight request: iterate its events, then read `result`."""

    def __init__(self, sock: socket.socket, op_id: str) -> None:
        self.sock = sock
        self.op_id = op_id
        self._file = sock.makefile("rb")
        self.result: Any = None

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(wire.encode(message))

    def send_data(self, data: bytes, kind: str = "stdin") -> None:
        """Input to a streaming method as binary frames (callers sharing the socket lock)."""
        for piece in wire.frames({"type": kind}, data):
            self.sock.sendall(piece)

    def cancel(self) -> None:
        with contextlib.suppress(OSError):
            self.send({"type": "cancel"})

    def _closed(self) -> Unavailable:
        return Unavailable("the daemon closed the connection; see `banger daemon logs`",
                           op_id=self.op_id)

    def events(self) -> Iterator[dict[str, Any]]:
        """Yield progress/data events (a data event's "data" is bytes); raises the daemon's error,
        stores the result."""
        while True:
            line = self._file.readline(wire.MAX_LINE)
            if not line.endswith(b"\n"):
                raise self._closed()
            msg = wire.decode(line)
            size = wire.payload_length(msg)
            if size is not None:
                payload = self._file.read(size)
                if len(payload) != size:
                    raise self._closed()
                msg["data"] = payload
            kind = msg.get("type")
            if kind == "result":
                self.result = msg.get("result")
                return
            if kind == "error":
                raise BangerError.from_wire({"op_id": self.op_id, **msg.get("error", {})})
            yield msg

    def close(self) -> None:
        self._file.close()
        self.sock.close()


class Client:
    def __init__(self, paths: Paths, *, autostart: bool = True) -> None:
        self.paths = paths
        self.autostart = autostart

    def _connect_once(self) -> socket.socket:
        """Connect only to our own user's daemon; FileNotFoundError while there is none."""
        check_private_dir(self.paths.runtime_dir)
        check_socket_file(self.paths.socket)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(self.paths.socket))
            check_daemon_peer(sock, self.paths.socket)
        except BaseException:
            sock.close()
            raise
        return sock

    def connect(self) -> socket.socket:
        try:
            return self._connect_once()
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            if not self.autostart:
                raise Unavailable("the banger daemon is not running; start it with "
                                  "`banger daemon start`") from exc
        return self._start_daemon_and_connect()

    def _start_daemon_and_connect(self) -> socket.socket:
        import fcntl

        self.paths.ensure()
        with open(self.paths.spawn_lock, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one CLI spawns; the others wait, then connect
            try:
                return self._connect_once()
            except (FileNotFoundError, ConnectionRefusedError):
                pass
            proc = spawn_daemon(self.paths)
            return self._wait_for_daemon(proc)

    def _wait_for_daemon(self, proc: subprocess.Popen[bytes]) -> socket.socket:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                return self._connect_once()
            except (FileNotFoundError, ConnectionRefusedError):
                pass
            if proc.poll() is not None and proc.returncode != 0:
                raise Unavailable(
                    f"the daemon failed to start: {log_tail(self.paths.daemon_log)}; "
                    "see `banger daemon logs`"
                )
            time.sleep(0.02)
        raise Unavailable("the daemon did not come up in time; see `banger daemon logs`")

    def start(self, method: Method[P], params: P) -> Call:
        """Send a contract method's request; the params struct must be the method's own."""
        if type(params) is not method.params:
            raise TypeError(f"{method.name} takes {method.params.__name__}, "
                            f"not {type(params).__name__}")
        sock = self.connect()
        op_id = wire.new_op_id()
        call = Call(sock, op_id)
        call.send({"v": wire.VERSION, "method": method.name,
                   "params": msgspec.to_builtins(params), "op_id": op_id})
        return call

    def call(self, method: Method[P], params: P, *, on_event: ProgressFn | None = None) -> Any:
        call = self.start(method, params)
        try:
            for event in call.events():
                if on_event:
                    on_event(event)
            return call.result
        except KeyboardInterrupt:
            call.cancel()
            raise
        finally:
            call.close()


def spawn_daemon(paths: Paths) -> subprocess.Popen[bytes]:
    """Start bangerd detached from this terminal, logging to the state dir (created 0600)."""
    import subprocess  # only when the daemon is not running: keeps the CLI's imports lean

    fd = os.open(paths.daemon_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
                 | os.O_CLOEXEC, 0o600)
    log = os.fdopen(fd, "ab")
    env = os.environ.copy()
    if env.get(HOME_ENV):  # the daemon runs in /, so a relative root must not move
        env[HOME_ENV] = str(Path(env[HOME_ENV]).expanduser().resolve())
    try:
        # -P and cwd /: `-m` would put the caller's directory (a repo, maybe hostile) first on
        # sys.path, and its own banger/ package would run as the daemon.
        return subprocess.Popen(
            [sys.executable, "-P", "-m", "banger.daemon", "--detached"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
            cwd="/",
            env=env,
        )
    finally:
        log.close()


def log_tail(path: Path, lines: int = 1) -> str:
    from banger.logfiles import tail_line  # only on a failed start: keep the CLI's imports lean

    return tail_line(path, lines) or "no log or an empty one"
