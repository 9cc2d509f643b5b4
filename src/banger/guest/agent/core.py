"""banger guest agent core: constants, errors, the process-wide state and small file helpers.

Stdlib-only, Python >= 3.7, part of the agent package shipped into guests.
"""

from __future__ import annotations

import os
import sys
import time

from . import protocol as proto
from .children import Reaper

AGENT_VERSION = "0.1.0"


READ_SIZE = 1024 * 1024  # one read of the transport; frames span reads anyway


DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


PORT_RETRY_SECONDS = 0.1  # virtio-serial reads return EOF while the host is away


FAST_RETRY_SECONDS = 0.005


FAST_RETRY_WINDOW = 3.0


LINUX_REBOOT_CMD_POWER_OFF = 0x4321FEDC


def log(message: str) -> None:
    sys.stderr.write(f"banger-agent: {message}\n")
    sys.stderr.flush()


class AgentError(Exception):
    """An operation failed; becomes an ERROR frame with this code."""

    def __init__(self, code: str, message: str) -> None:
        Exception.__init__(self, message)
        self.code = code
        self.message = message


class Aborted(Exception):
    """The channel was closed by the host or by a session reset."""


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Agent:
    """Process-wide state shared by sessions."""

    def __init__(self, pid1: bool, root: str) -> None:
        self.pid1 = pid1
        self.root = root  # "/" in guests; a scratch dir when testing configure
        self.started = time.monotonic()
        self.reaper = Reaper()

    @property
    def testing(self) -> bool:
        return self.root != "/"

    def path(self, absolute: str) -> str:
        return os.path.join(self.root, absolute.lstrip("/"))


def read_text(path: str, default: str = "") -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def write_file_atomic(path: str, data: str, mode: int) -> None:
    tmp = path + ".banger-tmp"
    if os.path.exists(tmp):
        os.unlink(tmp)
    # Created with its final mode: a private key is never readable, even for a moment.
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "w") as f:
        f.write(data)
    os.chmod(tmp, mode)  # the umask may have taken bits away
    os.rename(tmp, path)


def run_tool(agent: Agent, argv: list[str]) -> None:
    """Run a short command to completion; the reaper owns every child's exit status."""
    import subprocess

    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env={"PATH": DEFAULT_PATH})
    except OSError as e:
        raise AgentError(proto.E_FAILED, f"cannot run {argv[0]}: {e}") from None
    waiter = agent.reaper.watch(proc.pid)
    stderr = proc.stderr
    assert stderr is not None
    err = stderr.read().decode(errors="replace").strip()
    stderr.close()
    status = waiter.wait()
    proc.returncode = status  # the reaper already collected it
    if status != 0:
        raise AgentError(proto.E_FAILED, f"{' '.join(argv)} failed: {err}")

