"""banger guest agent: serves the banger agent protocol on one byte stream.

Stdlib-only, Python >= 3.7.  Installed in guests as the package /usr/local/lib/banger/agent/
(`python3 -m agent` from that directory; the init wrapper imports it directly).  Startup
imports only what serving needs; everything else (subprocess, tarfile, pty ioctls, ctypes, pwd)
is imported on first use because every import costs tens of milliseconds in a TCG guest.

Threads: the main thread reads and dispatches frames; each channel runs its
operation in its own thread; one reaper thread collects every child status.
"""

from __future__ import annotations

import os
import time

from . import protocol as proto
from .core import (
    AGENT_VERSION,
    FAST_RETRY_SECONDS,
    FAST_RETRY_WINDOW,
    PORT_RETRY_SECONDS,
    READ_SIZE,
    Agent,
    log,
    read_text,
)
from .exec_ops import (
    op_exec,
    op_get,
    op_put,
)
from .session import INPUT_STREAMS, OPERATIONS, Session
from .sessions_ops import INPUT_STREAMS as SESSION_INPUT_STREAMS
from .sessions_ops import OPERATIONS as SESSION_OPERATIONS
from .system_ops import (
    op_configure,
    op_health,
    op_info,
    op_ports,
    op_poweroff,
)

TYPE_CHECKING = False  # mypy treats this name as true; the guest never imports typing
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


OPERATIONS.update({
    "health": op_health,
    "info": op_info,
    "exec": op_exec,
    "put": op_put,
    "get": op_get,
    "configure": op_configure,
    "ports": op_ports,
    "poweroff": op_poweroff,
    **SESSION_OPERATIONS,
})
INPUT_STREAMS.update(SESSION_INPUT_STREAMS)


def serve_stream(agent: Agent, read: Callable[[], bytes], write: Callable[[bytes], None]) -> bool:
    """Serve one host connection until EOF; True if the host sent anything."""
    session = Session(agent, write)
    decoder = proto.FrameDecoder()
    got_data = False
    try:
        while True:
            data = read()
            if not data:
                return got_data
            got_data = True
            items = decoder.feed(data)
            if decoder.discarded:
                log(f"skipped {decoder.discarded} bytes of garbage on the stream")
                decoder.discarded = 0
            for item in items:
                session.dispatch(item)
    finally:
        session.reset()


def serve_socket(agent: Agent, sock: Any) -> None:
    def read() -> bytes:
        try:
            return bytes(sock.recv(READ_SIZE))
        except OSError:
            return b""

    serve_stream(agent, read, sock.sendall)


def serve_listener(agent: Agent, listener: Any) -> None:
    while True:
        conn, _ = listener.accept()
        log("host connected")
        try:
            serve_socket(agent, conn)
        finally:
            conn.close()
        log("host disconnected")


def find_virtio_port(name: str) -> str:
    base = "/sys/class/virtio-ports"
    for port in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        if read_text(os.path.join(base, port, "name")).strip() == name:
            return "/dev/" + port
    raise FileNotFoundError(f"no virtio-serial port named {name!r}")


PORT_BUFFER = 4096  # the guest's virtio-console receive buffers are one page each


class PortIO:
    """A virtio-serial port, non-blocking: one read() returns at most one 4 KiB receive buffer,
    so a readv over 4 KiB slices takes every buffer that is ready in one system call (a 1 MiB
    frame was 256 reads and decoder passes under TCG). Writes wait for room with select."""

    def __init__(self, fd: int) -> None:
        import select

        self.fd = fd
        self._select = select.select
        self._buffer = bytearray(READ_SIZE)
        self._whole = memoryview(self._buffer)
        self._slices = [self._whole[i:i + PORT_BUFFER] for i in range(0, READ_SIZE, PORT_BUFFER)]

    def read(self) -> bytes:
        while True:
            try:
                self._select([self.fd], [], [])
                got = os.readv(self.fd, self._slices)
            except BlockingIOError:
                continue  # woken with nothing to read (another reader, or a spurious wake-up)
            except OSError:
                return b""
            return bytes(self._whole[:got])

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view):]
            except BlockingIOError:
                self._select([], [self.fd], [])


def serve_virtio_port(agent: Agent, name: str) -> None:
    warned = False
    while True:
        try:
            path = find_virtio_port(name)
            break
        except FileNotFoundError as e:
            if not warned:
                log(f"{e}; waiting for it")
                warned = True
            time.sleep(PORT_RETRY_SECONDS)
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    log(f"serving on {path} ({name})")
    port = PortIO(fd)

    gone_since = time.monotonic()
    while True:
        if serve_stream(agent, port.read, port.write):
            log("host disconnected; waiting for it to come back")
            gone_since = time.monotonic()
        # Poll fast just after a disconnect: a restored snapshot's new host connects at once.
        recent = time.monotonic() - gone_since < FAST_RETRY_WINDOW
        time.sleep(FAST_RETRY_SECONDS if recent else PORT_RETRY_SECONDS)


KERNEL_CMDLINE = "/proc/cmdline"


TRANSPORT_OPTIONS = ("port-name", "unix", "fd", "vsock-port")


def transport_from_cmdline(options: dict[str, str], cmdline: str) -> dict[str, str]:
    """No transport option given: `banger.agent=vsock:PORT` (firecracker) picks vsock, else the
    virtio-serial port (qemu)."""
    if any(key in options for key in TRANSPORT_OPTIONS):
        return options
    for arg in cmdline.split():
        if arg.startswith("banger.agent=vsock:") and arg.split(":", 1)[1].isdigit():
            return dict(options, **{"vsock-port": arg.split(":", 1)[1]})
    return options


def serve(agent: Agent, options: dict[str, str]) -> None:
    import socket

    options = transport_from_cmdline(options, read_text(KERNEL_CMDLINE))
    if "fd" in options:
        serve_socket(agent, socket.socket(fileno=int(options["fd"])))
    elif "unix" in options:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        staging = options["unix"] + ".new"
        if os.path.exists(staging):
            os.unlink(staging)
        listener.bind(staging)
        listener.listen(4)
        os.rename(staging, options["unix"])  # the path appears only once it accepts
        log("listening on " + options["unix"])
        serve_listener(agent, listener)
    elif "vsock-port" in options:
        listener = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        listener.bind((socket.VMADDR_CID_ANY, int(options["vsock-port"])))
        listener.listen(4)
        log("listening on vsock port " + options["vsock-port"])
        serve_listener(agent, listener)
    else:
        serve_virtio_port(agent, options.get("port-name", "banger.agent"))


USAGE = """usage: python3 -m agent [--port-name NAME | --unix PATH | --fd N | --vsock-port PORT]
                [--pid1] [--test-root DIR]"""


VALUE_OPTIONS = ("port-name", "unix", "fd", "vsock-port", "test-root")


def parse_args(argv: list[str]) -> dict[str, str]:
    """Tiny parser: argparse costs too much startup time in a TCG guest."""
    options = {}
    args = list(argv)
    while args:
        arg = args.pop(0)
        key = arg[2:] if arg.startswith("--") else ""
        if key in VALUE_OPTIONS and args:
            options[key] = args.pop(0)
        elif key == "pid1":
            options[key] = "1"
        else:
            raise SystemExit(f"{USAGE}\nunknown or incomplete option {arg!r}")
    return options


# Linux numbers of SIGPIPE and SIGXFSZ: Python ignores them itself and subprocess restores them.
PYTHON_IGNORED = (1 << (13 - 1)) | (1 << (25 - 1))


def status_mask(status: str, field: str) -> int:
    """A signal bit mask (SigIgn, SigBlk, ...) from the text of /proc/PID/status."""
    for line in status.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1], 16)
    return 0


def _no_op(signum: int, frame: Any) -> None:
    """Keeps a signal ignored by the agent while exec resets it to the default in children."""


def reset_inherited_signals() -> None:
    """Ignored signals and blocked masks survive fork and exec: a shell's background job (the init
    wrapper under systemd) ignores SIGINT and SIGQUIT, which made Ctrl-C do nothing in the VM."""
    status = read_text("/proc/self/status")
    ignored = status_mask(status, "SigIgn") & ~PYTHON_IGNORED
    blocked = status_mask(status, "SigBlk")
    if not ignored and not blocked:
        return  # the usual case (PID 1): spare the import, it pulls in enum
    import contextlib
    import signal

    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for number in range(1, signal.NSIG):
        if ignored & (1 << (number - 1)):
            # libc's reserved real-time signals (32, 33) refuse a handler: they stay as they are
            with contextlib.suppress(OSError, ValueError):
                signal.signal(number, _no_op)


def main(argv: list[str]) -> int:
    options = parse_args(argv)
    reset_inherited_signals()  # before any thread starts: threads inherit the mask
    agent = Agent(pid1="pid1" in options or os.getpid() == 1,
                  root=os.path.abspath(options.get("test-root", "/")))
    agent.reaper.start()
    log(f"version {AGENT_VERSION} started (pid {os.getpid()}, pid1 mode {agent.pid1})")
    while True:
        try:
            serve(agent, options)
            return 0
        except KeyboardInterrupt:
            return 130
        except Exception as e:
            log(f"transport failed: {e!r}")
            if not agent.pid1:
                return 1
            time.sleep(1)  # PID 1 must never exit: the kernel would panic

