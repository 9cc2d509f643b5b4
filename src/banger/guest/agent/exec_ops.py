"""Guest agent operations on processes and files: exec (pipes or a PTY), put and get (tar).

Stdlib-only, Python >= 3.7; subprocess, pty, pwd and tarfile are imported on first use.
"""

from __future__ import annotations

import os
import threading

from . import protocol as proto
from .children import ExitWaiter, exit_result, kill_group
from .core import (
    DEFAULT_PATH,
    Aborted,
    AgentError,
    write_all,
)
from .session import Channel

TYPE_CHECKING = False  # mypy treats this name as true; the guest never imports typing
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class User:
    def __init__(self, name: str, uid: int, gid: int, home: str, shell: str) -> None:
        self.name, self.uid, self.gid, self.home, self.shell = name, uid, gid, home, shell


def resolve_user(spec: Any) -> User:
    import pwd

    try:
        if spec is None:
            entry = pwd.getpwuid(os.getuid())
        elif isinstance(spec, int) or (isinstance(spec, str) and spec.isdigit()):
            entry = pwd.getpwuid(int(spec))
        else:
            entry = pwd.getpwnam(str(spec))
    except KeyError:
        if spec is None:  # no passwd entry for ourselves: run as we are
            return User("root", os.getuid(), os.getgid(), os.environ.get("HOME", "/"), "/bin/sh")
        raise AgentError(proto.E_BAD_REQUEST, f"no such user {spec!r}") from None
    if entry.pw_uid != os.getuid() and os.getuid() != 0:
        raise AgentError(proto.E_FAILED, f"switching to user {spec!r} needs a root agent")
    return User(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir,
                entry.pw_shell or "/bin/sh")


def exec_argv(params: dict[str, Any]) -> list[str]:
    if isinstance(params.get("shell"), str):
        return ["/bin/sh", "-c", params["shell"]]
    argv = params.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise AgentError(proto.E_BAD_REQUEST, "exec needs a non-empty argv list or a shell string")
    return argv


def child_env(user: User, additions: Any, term: str | None) -> dict[str, str]:
    env = {"PATH": DEFAULT_PATH, "HOME": user.home, "USER": user.name,
           "LOGNAME": user.name, "SHELL": user.shell}
    if term:
        env["TERM"] = term
    if additions is not None and not isinstance(additions, dict):
        raise AgentError(proto.E_BAD_REQUEST, "env must be an object")
    for key, value in (additions or {}).items():
        env[str(key)] = str(value)
    return env


def make_preexec(user: User, controlling_tty: bool) -> Callable[[], None]:
    """Runs in the child after setsid(): take the tty, drop privileges."""
    import fcntl
    import termios

    switch = user.uid != os.getuid()

    def preexec() -> None:
        if controlling_tty:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        if switch:
            os.initgroups(user.name, user.gid)
            os.setgid(user.gid)
            os.setuid(user.uid)

    return preexec


def op_exec(channel: Channel, params: dict[str, Any]) -> dict[str, Any]:
    argv = exec_argv(params)
    user = resolve_user(params.get("user"))
    tty = params.get("pty")
    if tty is not None and not isinstance(tty, dict):
        raise AgentError(proto.E_BAD_REQUEST, "pty must be an object {rows, cols, term}")
    term = str(tty.get("term") or "xterm-256color") if tty is not None else None
    env = child_env(user, params.get("env"), term)
    cwd = params.get("cwd") or (user.home if os.path.isdir(user.home) else "/")
    if tty is not None:
        return run_with_pty(channel, argv, env, cwd, user, tty)
    return run_with_pipes(channel, argv, env, cwd, user, bool(params.get("stdin")))


def spawn(argv: list[str], env: dict[str, str], cwd: str, user: User, tty: bool,
          **stdio: Any) -> Any:
    import subprocess

    try:
        return subprocess.Popen(argv, env=env, cwd=cwd, start_new_session=True,
                                preexec_fn=make_preexec(user, tty), **stdio)
    except (OSError, subprocess.SubprocessError) as e:
        raise AgentError(proto.E_FAILED, f"cannot run {argv[0]}: {e}") from None


def start_thread(target: Callable[..., None], *args: Any) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def run_with_pipes(channel: Channel, argv: list[str], env: dict[str, str], cwd: str,
                   user: User, want_stdin: bool) -> dict[str, Any]:
    import subprocess

    stdin = subprocess.PIPE if want_stdin else subprocess.DEVNULL
    proc = spawn(argv, env, cwd, user, False, stdin=stdin, stdout=subprocess.PIPE,
                 stderr=subprocess.PIPE)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            widen_pipe(pipe.fileno())
    waiter = started(channel, proc, None)
    pumps = [start_thread(pump_output, channel, proc.stdout.fileno(), proto.STDOUT),
             start_thread(pump_output, channel, proc.stderr.fileno(), proto.STDERR)]
    feeder = None
    if want_stdin:
        feeder = start_thread(pump_input, channel, proc.stdin.fileno(), proc.stdin.close)
    status = waiter.wait()
    for pump in pumps:
        pump.join()
    result = finished(channel, proc, status, feeder)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    return result


def spawn_on_pty(argv: list[str], env: dict[str, str], cwd: str, user: User,
                 tty: dict[str, Any]) -> tuple[Any, int]:
    """argv on a new PTY sized as asked; the process and the PTY's master end."""
    master, slave = os.openpty()
    try:
        set_winsize(master, int(tty.get("rows", 24)), int(tty.get("cols", 80)))
        proc = spawn(argv, env, cwd, user, True, stdin=slave, stdout=slave, stderr=slave)
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    return proc, master


def run_with_pty(channel: Channel, argv: list[str], env: dict[str, str], cwd: str,
                 user: User, tty: dict[str, Any]) -> dict[str, Any]:
    proc, master = spawn_on_pty(argv, env, cwd, user, tty)
    waiter = started(channel, proc, master)
    feeder = start_thread(pump_input, channel, master, lambda: write_all(master, b"\x04"))
    pump = start_thread(pump_pty, channel, master, waiter.done)
    status = waiter.wait()
    pump.join()
    result = finished(channel, proc, status, feeder)
    os.close(master)
    return result


def started(channel: Channel, proc: Any, master: int | None) -> ExitWaiter:
    waiter = channel.session.agent.reaper.watch(proc.pid)

    def kill() -> None:
        if not waiter.done.is_set():  # once reaped, the pid may belong to someone else
            kill_group(proc.pid)

    channel.add_abort_hook(kill)
    channel.on_control = lambda message: control_process(proc.pid, waiter, master, message)
    channel.send_event({"event": "started", "pid": proc.pid})
    return waiter


def finished(channel: Channel, proc: Any, status: int,
             feeder: threading.Thread | None) -> dict[str, Any]:
    proc.returncode = status  # we reaped it; stops Popen from ever waiting on it
    channel.inbox.abort()  # ends the stdin pump if the host never closed stdin
    if feeder is not None:
        feeder.join(1.0)  # before its fd is closed (and its number reused)
    return exit_result(status)


def control_process(pid: int, waiter: ExitWaiter, master: int | None,
                    message: dict[str, Any]) -> None:
    kind = message.get("type")
    if kind == "signal":
        if not waiter.done.is_set():
            os.kill(pid, int(message["signal"]))
    elif kind == "resize" and master is not None:
        set_winsize(master, int(message["rows"]), int(message["cols"]))
    elif kind != "resize":
        raise proto.ProtocolError(f"unknown control message {kind!r}")


def set_winsize(fd: int, rows: int, cols: int) -> None:
    """TIOCSWINSZ; the kernel then sends SIGWINCH to the foreground process group."""
    import fcntl
    import struct
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


F_SETPIPE_SZ = 1031  # Linux; fcntl names it only from Python 3.10
PIPE_SIZE = 1024 * 1024  # the default 64 KiB pipe means a read, a frame and a wake-up per 64 KiB


def widen_pipe(fd: int) -> None:
    """Best effort: a bigger pipe lets one read take a whole frame (EPERM past pipe-max-size)."""
    import contextlib
    import fcntl

    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)


def read_some(channel: Channel, fd: int) -> bytes | None:
    """Read at most the available credit; None when the channel is gone."""
    amount = channel.credit.take(proto.DATA_CHUNK)
    if not amount:
        return None
    try:
        data = os.read(fd, amount)
    except OSError:  # EIO from a pty master once the terminal is gone
        data = b""
    if len(data) < amount:
        channel.credit.grant(amount - len(data))
    return data


def pump_output(channel: Channel, fd: int, stream: int) -> None:
    while True:
        data = read_some(channel, fd)
        if data is None:
            return
        if not data:
            channel.send_eof(stream)
            return
        channel.send_data(stream, data)


def pump_pty(channel: Channel, master: int, exited: threading.Event) -> None:
    """Like pump_output, but a pty may never report EOF (a background job holds it)."""
    import select

    while not channel.closed:
        if not select.select([master], [], [], 0.1)[0]:
            if exited.is_set():
                break
            continue
        data = read_some(channel, master)
        if not data:
            break
        channel.send_data(proto.STDOUT, data)
    channel.send_eof(proto.STDOUT)


def pump_input(channel: Channel, fd: int, on_eof: Callable[[], None]) -> None:
    broken = False
    while True:
        try:
            chunk = channel.inbox.get()
        except Aborted:
            return
        if not chunk:
            if not broken:
                on_eof()
            return
        if not broken:
            try:
                write_all(fd, chunk)
            except OSError:
                broken = True  # the process stopped reading; keep draining the host
        channel.consumed(len(chunk))


class InboxReader:
    """File-like reader over a channel's inbox, for tarfile's stream mode."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._pending = memoryview(b"")  # a view: tarfile's 10 KiB reads must not copy the rest

    def read(self, size: int = -1) -> bytes:
        if not self._pending:
            chunk = self._channel.inbox.get()
            if chunk:
                self._channel.consumed(len(chunk))
            self._pending = memoryview(chunk)
        if size < 0 or size >= len(self._pending):
            data, self._pending = bytes(self._pending), memoryview(b"")
        else:
            data, self._pending = bytes(self._pending[:size]), self._pending[size:]
        return data

    def drain(self) -> None:
        while self.read(proto.DATA_CHUNK):
            pass


class ChannelWriter:
    """File-like writer that turns tarfile output into DATA frames."""

    def __init__(self, channel: Channel, stream: int) -> None:
        self._channel = channel
        self._stream = stream
        self._buffer = bytearray()
        self.total = 0

    def write(self, data: bytes) -> int:
        self._buffer += data
        self.total += len(data)
        if len(self._buffer) >= proto.DATA_CHUNK:
            self.flush()
        return len(data)

    def flush(self) -> None:
        data, self._buffer = bytes(self._buffer), bytearray()
        self._channel.send_stream(self._stream, data)

    def close(self) -> None:
        self.flush()
        self._channel.send_eof(self._stream)


def inside(root: str, path: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def check_member(root: str, member: Any) -> str:
    """Where a tar member may be extracted; AgentError if it would leave root."""
    name = member.name
    if name.startswith("/") or ".." in name.split("/"):
        raise AgentError(proto.E_BAD_REQUEST, f"refusing tar member {name!r}: absolute or '..'")
    target = os.path.join(root, name)
    if not inside(root, os.path.realpath(os.path.dirname(target))):
        raise AgentError(proto.E_BAD_REQUEST, f"refusing tar member {name!r}: parent escapes")
    if not member.isdir() and os.path.islink(target):
        os.unlink(target)  # never write through a link left by an earlier put
    if not inside(root, os.path.realpath(target)):
        raise AgentError(proto.E_BAD_REQUEST, f"refusing tar member {name!r}: escapes")
    if member.issym():
        link = os.path.join(os.path.dirname(target), member.linkname)
        if os.path.isabs(member.linkname) or not inside(root, os.path.realpath(link)):
            message = f"refusing symlink {name!r} -> {member.linkname!r}: escapes"
            raise AgentError(proto.E_BAD_REQUEST, message)
    if member.islnk():
        hard = member.linkname
        if hard.startswith("/") or ".." in hard.split("/"):
            raise AgentError(proto.E_BAD_REQUEST, f"refusing hard link {name!r} -> {hard!r}")
    return target


def op_put(channel: Channel, params: dict[str, Any]) -> dict[str, Any]:
    import tarfile

    dest = require_path(params, "dest")
    os.makedirs(dest, exist_ok=True)
    root = os.path.realpath(dest)
    # We validated every member ourselves; newer Pythons' filters would drop ownership.
    trust = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
    reader = InboxReader(channel)
    count = 0
    try:
        with tarfile.open(fileobj=reader, mode="r|*") as archive:  # type: ignore[call-overload]
            for member in archive:
                check_member(root, member)
                archive.extract(member, root, set_attrs=True, numeric_owner=True, **trust)
                count += 1
    except tarfile.TarError as e:
        raise AgentError(proto.E_BAD_REQUEST, f"bad tar stream: {e}") from None
    reader.drain()
    return {"members": count}


def op_get(channel: Channel, params: dict[str, Any]) -> dict[str, Any]:
    import tarfile

    path = require_path(params, "path")
    if not os.path.lexists(path):
        raise AgentError(proto.E_NOT_FOUND, f"{path} does not exist")
    writer = ChannelWriter(channel, proto.TAR)
    arcname = os.path.basename(path.rstrip("/")) or "."
    with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as archive:  # type: ignore[call-overload]
        archive.add(path, arcname=arcname)
    writer.close()
    return {"bytes": writer.total}


def require_path(params: dict[str, Any], key: str) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value.startswith("/"):
        raise AgentError(proto.E_BAD_REQUEST, f"{key} must be an absolute path")
    return value
