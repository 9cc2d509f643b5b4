"""Guest-owned sessions: long-lived commands that outlive the host connection.

Stdlib-only, Python >= 3.7, part of the agent package shipped into guests. The agent process lives
as long as the guest, so each session is supervised by a thread of it (not by a channel, which a
host disconnect aborts): the thread owns the pipes or PTY, appends output to a capped log on disk
(sessions_log) and records the exit status in `exit.json`. State lives on disk under
/var/lib/banger/sessions/NAME/; a session with no exit record that this agent process does not
supervise (the guest rebooted) is marked exited and `lost`.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time

from . import protocol as proto
from .children import exit_result, kill_group
from .core import AgentError, log, write_all
from .sessions_log import DEFAULT_CAP, MAX_CAP, MIN_CAP, LogWriter, bounds

TYPE_CHECKING = False  # mypy treats this name as true; the guest never imports typing
if TYPE_CHECKING:
    from typing import Any

    from .children import ExitWaiter
    from .core import Agent

SESSIONS_DIR = "/var/lib/banger/sessions"
NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
MAX_SESSIONS = 512  # kept on disk, running or not: rm the exited ones
MAX_ARGV = 4096  # arguments, and bytes of the whole command line times 64
READ_SIZE = 64 * 1024
E_BUSY = "busy"


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name) or name.isdigit():
        raise AgentError(proto.E_BAD_REQUEST, "a session name is 1-63 lowercase letters, digits "
                                              "and inner dashes, not only digits")
    return name


def write_json(path: str, obj: dict[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.rename(tmp, path)


def read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            obj = json.load(f)
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


class Live:
    """A running session: its process, its fds and the thread copying its output to the log."""

    def __init__(self, name: str, directory: str, pid: int, waiter: ExitWaiter, out_fd: int,
                 in_fd: int, tty: bool, cap: int) -> None:
        self.name = name
        self.directory = directory
        self.pid = pid
        self.waiter = waiter
        self.out_fd = out_fd
        self.in_fd = in_fd  # the session's stdin (the PTY master when tty)
        self.tty = tty
        self.writer = LogWriter(directory, cap)
        self.cond = threading.Condition()  # notified on new output and on exit
        self.exited = False
        self.input_lock = threading.Lock()  # one write to stdin at a time
        self.input_owner: object | None = None  # the attach allowed to type, if any

    @property
    def end(self) -> int:
        return self.writer.end

    def run(self) -> None:
        import select

        try:
            while True:
                ready = select.select([self.out_fd], [], [], 0.2)[0]
                if not ready:
                    if self.waiter.done.is_set():
                        break  # a background child may hold the output open forever
                    continue
                try:
                    data = os.read(self.out_fd, READ_SIZE)
                except OSError:  # EIO from a PTY master once every slave is closed
                    data = b""
                if not data:
                    break
                self.writer.append(data)
                with self.cond:
                    self.cond.notify_all()
        except Exception as e:  # the log failed (disk full...): the process still gets reaped
            log(f"session {self.name}: output copy failed: {e!r}")
        status = self.waiter.wait()
        record = exit_result(status)
        record["ended"] = time.time()
        write_json(os.path.join(self.directory, "exit.json"), record)
        self.writer.close()
        with self.input_lock:
            os.close(self.out_fd)
            if self.in_fd != self.out_fd and self.in_fd >= 0:
                os.close(self.in_fd)
            self.in_fd = -1
        with self.cond:
            self.exited = True
            self.cond.notify_all()

    def write_input(self, data: bytes) -> None:
        with self.input_lock:
            if self.in_fd < 0:
                raise AgentError(proto.E_FAILED, f"session {self.name} has ended")
            try:
                write_all(self.in_fd, data)
            except OSError as e:
                raise AgentError(proto.E_FAILED,
                                 f"session {self.name} does not read its input: {e}") from None

    def close_input(self) -> None:
        with self.input_lock:
            if self.in_fd < 0:
                return
            if self.tty:
                write_all(self.in_fd, b"\x04")  # ^D: end of input on a terminal
            else:
                os.close(self.in_fd)
                self.in_fd = -1

    def signal(self, signum: int) -> None:
        if not self.waiter.done.is_set():  # once reaped, the pid may belong to someone else
            try:  # noqa: SIM105
                os.killpg(self.pid, signum)
            except OSError:
                pass

    def wait_exit(self, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.exited, timeout)


class Registry:
    """Every session of this guest: the live ones in memory, all of them on disk."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.base = agent.path(SESSIONS_DIR)
        self.lock = threading.Lock()
        self.live: dict[str, Live] = {}

    def directory(self, name: str) -> str:
        return os.path.join(self.base, check_name(name))

    def start(self, params: dict[str, Any]) -> dict[str, Any]:
        from .exec_ops import child_env, exec_argv, resolve_user

        name = check_name(params.get("name"))
        argv = exec_argv(params)
        if len(argv) > MAX_ARGV or sum(len(a) for a in argv) > MAX_ARGV * 64:
            raise AgentError(proto.E_BAD_REQUEST, "the command line is too long")
        user = resolve_user(params.get("user"))
        tty = params.get("pty")
        if tty is not None and not isinstance(tty, dict):
            raise AgentError(proto.E_BAD_REQUEST, "pty must be an object {rows, cols, term}")
        cap = params.get("log_cap") or DEFAULT_CAP
        if not isinstance(cap, int) or not MIN_CAP <= cap <= MAX_CAP:
            raise AgentError(proto.E_BAD_REQUEST, f"log_cap must be {MIN_CAP}..{MAX_CAP} bytes")
        term = str(tty.get("term") or "xterm-256color") if tty is not None else None
        env = child_env(user, params.get("env"), term)
        cwd = params.get("cwd") or (user.home if os.path.isdir(user.home) else "/")
        if not isinstance(cwd, str) or not os.path.isdir(cwd):
            raise AgentError(proto.E_BAD_REQUEST, f"working directory {cwd!r} does not exist")
        with self.lock:
            os.makedirs(self.base, mode=0o700, exist_ok=True)
            directory = self.directory(name)
            if os.path.lexists(directory):
                raise AgentError(E_BUSY, f"a session named {name} already exists")
            if len(os.listdir(self.base)) >= MAX_SESSIONS:
                raise AgentError(proto.E_FAILED, f"{MAX_SESSIONS} sessions are kept already; "
                                                 "remove exited ones")
            os.mkdir(directory, 0o700)
            try:
                live = self._spawn(name, directory, argv, env, cwd, user, tty, cap)
            except BaseException:
                import shutil

                shutil.rmtree(directory, ignore_errors=True)
                raise
            self.live[name] = live  # before meta.json: a session with meta but no owner is lost
            meta = {"name": name, "argv": argv, "cwd": cwd, "tty": tty is not None,
                    "pid": live.pid, "started": time.time(), "log_cap": cap}
            write_json(os.path.join(directory, "meta.json"), meta)
        threading.Thread(target=live.run, name=f"session-{name}", daemon=True).start()
        return self.info(name)

    def _spawn(self, name: str, directory: str, argv: list[str], env: dict[str, str], cwd: str,
               user: Any, tty: dict[str, Any] | None, cap: int) -> Live:
        from .exec_ops import spawn, spawn_on_pty

        if tty is not None:
            proc, master = spawn_on_pty(argv, env, cwd, user, tty)
            waiter = self.agent.reaper.watch(proc.pid)
            proc.returncode = 0  # the reaper owns its status; Popen must never wait on it
            return Live(name, directory, proc.pid, waiter, master, master, True, cap)
        out_r, out_w = os.pipe()
        in_r, in_w = os.pipe()
        try:
            proc = spawn(argv, env, cwd, user, False, stdin=in_r, stdout=out_w, stderr=out_w)
        except BaseException:
            os.close(out_r)
            os.close(in_w)
            raise
        finally:
            os.close(out_w)
            os.close(in_r)
        waiter = self.agent.reaper.watch(proc.pid)
        proc.returncode = 0
        return Live(name, directory, proc.pid, waiter, out_r, in_w, False, cap)

    def names(self) -> list[str]:
        try:
            found = os.listdir(self.base)
        except OSError:
            return []
        return sorted(n for n in found if NAME_RE.match(n) and not n.isdigit())

    def info(self, name: str) -> dict[str, Any]:
        directory = self.directory(name)
        meta = read_json(os.path.join(directory, "meta.json"))
        if meta is None:
            raise AgentError(proto.E_NOT_FOUND, f"no session named {name}")
        live = self.live.get(name)
        ended = read_json(os.path.join(directory, "exit.json"))
        if ended is None and (live is None or live.exited):
            # nobody supervises it: the guest rebooted (or the agent restarted) under it
            ended = {"exit_code": None, "signal": None, "ended": None, "lost": True}
            write_json(os.path.join(directory, "exit.json"), ended)
        first, end = bounds(directory)
        info = {key: meta.get(key) for key in ("name", "argv", "cwd", "tty", "pid", "started",
                                               "log_cap")}
        info.update({"state": "running" if ended is None else "exited", "log_start": first,
                     "log_end": end, "exit_code": None, "signal": None, "ended": None,
                     "lost": False})
        if ended is not None:
            info.update({key: ended.get(key) for key in ("exit_code", "signal", "ended", "lost")})
            info["lost"] = bool(info["lost"])
        return info

    def get_live(self, name: str) -> Live:
        live = self.live.get(check_name(name))
        if live is None or live.exited:
            self.info(name)  # not_found when there is no such session at all
            raise AgentError(proto.E_FAILED, f"session {name} is not running")
        return live

    def stop(self, name: str, signum: int, grace: float) -> dict[str, Any]:
        """Send signum to the session's process group; after grace seconds, SIGKILL."""
        live = self.get_live(name)
        live.signal(signum)
        if grace > 0 and not live.wait_exit(grace) and signum != 9:
            live.signal(9)
        live.wait_exit(5.0 if signum == 9 or grace > 0 else 0.5)
        return self.info(name)

    def remove(self, name: str, force: bool) -> dict[str, Any]:
        import shutil

        info = self.info(name)
        live = self.live.get(name)
        if live is not None and not live.exited:
            if not force:
                raise AgentError(E_BUSY, f"session {name} is running; stop it first or force")
            live.signal(9)
            kill_group(live.pid)
            live.wait_exit(10.0)
        with self.lock:
            self.live.pop(name, None)
            shutil.rmtree(self.directory(name), ignore_errors=True)
        return info


_REGISTRIES: dict[str, Registry] = {}
_REGISTRIES_LOCK = threading.Lock()


def registry(agent: Agent) -> Registry:
    with _REGISTRIES_LOCK:
        found = _REGISTRIES.get(agent.root)
        if found is None:
            found = _REGISTRIES[agent.root] = Registry(agent)
        return found
