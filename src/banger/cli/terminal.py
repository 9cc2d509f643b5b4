"""Stream a guest command through the daemon: stdin thread, raw mode, resize, signals."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import Any

from banger.durable import write_all
from banger.rpc.client import Call

READ_SIZE = 1024 * 1024  # a pipe or file on stdin gives what it has, up to this, per read


class Sender:
    """The stdin thread and signal handlers both write to the socket: one lock."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        with self.lock, contextlib.suppress(OSError):
            self.call.send(message)

    def send_data(self, data: bytes) -> None:
        with self.lock, contextlib.suppress(OSError):
            self.call.send_data(data)


def pump_stdin(sender: Sender, transform: Callable[[bytes], Iterable[bytes]] | None = None,
               fd: int | None = None) -> None:
    """Our stdin (or fd) to the guest command until EOF, each read through `transform`."""
    source = sys.stdin.fileno() if fd is None else fd
    while True:
        try:
            data = os.read(source, READ_SIZE)
        except OSError:
            data = b""
        if not data:
            sender.send({"type": "stdin_eof"})
            return
        for part in transform(data) if transform is not None else (data,):
            sender.send_data(part)


@contextlib.contextmanager
def raw_terminal() -> Iterator[None]:
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSANOW)  # not TCSAFLUSH: keep what the user typed while the VM started
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def terminal_size() -> tuple[int, int]:
    size = shutil.get_terminal_size((80, 24))
    return size.lines, size.columns


Handler = Callable[[int, FrameType | None], None]


@contextlib.contextmanager
def running(call: Call, handlers: dict[int, Handler]) -> Iterator[None]:
    """These signal handlers while the call runs; the old ones back and the call closed after."""
    previous = {sig: signal.getsignal(sig) for sig in handlers}
    for sig, handler in handlers.items():
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        call.close()


def exit_code(call: Call) -> int:
    """The guest command's exit code (128 + signal when killed); 1 when there is none."""
    result = call.result or {}
    return int(result.get("code", 1))


def forward_signal(sender: Sender) -> Handler:
    def handler(sig: int, _frame: FrameType | None) -> None:
        sender.send({"type": "signal", "signal": sig})

    return handler


def stream(call: Call, *, forward_stdin: bool, tty: bool) -> int:
    """Run until the guest command ends; returns its exit code (128 + signal when killed)."""
    sender = Sender(call)

    def on_winch(_sig: int, _frame: FrameType | None) -> None:
        rows, cols = terminal_size()
        sender.send({"type": "resize", "rows": rows, "cols": cols})

    handlers: dict[int, Handler] = {signal.SIGWINCH: on_winch}
    if not tty:  # with a PTY, Ctrl-C is a byte the guest's terminal turns into SIGINT
        handlers |= {signal.SIGINT: forward_signal(sender), signal.SIGTERM: forward_signal(sender)}
    with running(call, handlers), raw_terminal() if tty else contextlib.nullcontext():
        if forward_stdin:  # after raw mode, so typeahead is read raw, not cooked
            threading.Thread(target=pump_stdin, args=(sender,), daemon=True).start()
        for event in call.events():
            if event.get("type") == "data":
                fd = 1 if event.get("stream") == "stdout" else 2
                write_all(fd, event["data"])
    return exit_code(call)
