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


def stream(call: Call, *, forward_stdin: bool, tty: bool) -> int:
    """Run until the guest command ends; returns its exit code (128 + signal when killed)."""
    sender = Sender(call)

    def on_winch(_sig: int, _frame: FrameType | None) -> None:
        rows, cols = terminal_size()
        sender.send({"type": "resize", "rows": rows, "cols": cols})

    def on_interrupt(sig: int, _frame: FrameType | None) -> None:
        sender.send({"type": "signal", "signal": sig})

    previous = {s: signal.getsignal(s) for s in (signal.SIGWINCH, signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGWINCH, on_winch)
    if not tty:  # with a PTY, Ctrl-C is a byte the guest's terminal turns into SIGINT
        signal.signal(signal.SIGINT, on_interrupt)
        signal.signal(signal.SIGTERM, on_interrupt)
    try:
        with raw_terminal() if tty else contextlib.nullcontext():
            if forward_stdin:  # after raw mode, so typeahead is read raw, not cooked
                threading.Thread(target=pump_stdin, args=(sender,), daemon=True).start()
            for event in call.events():
                if event.get("type") == "data":
                    fd = 1 if event.get("stream") == "stdout" else 2
                    write_all(fd, event["data"])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        call.close()
    result = call.result or {}
    return int(result.get("code", 1))
