"""session.* methods: guest-owned sessions, long-lived commands that outlive the CLI and the daemon.

The guest agent owns them (docs/sessions.md); the daemon only relays. Output of `logs` and
`attach` arrives as `data` events on stdout, as `vm.exec` sends it.
"""

from __future__ import annotations

import msgspec

from banger.rpc.methods import Method

DEFAULT_LOG_CAP = 8 * 1024 * 1024  # the agent's default: two files of 4 MiB


class SessionStartParams(msgspec.Struct, forbid_unknown_fields=True):
    vm: str
    argv: list[str]
    name: str | None = None  # generated when not given
    cwd: str | None = None  # default: the VM's workspace dir, else root's home
    env: dict[str, str] = {}
    tty: bool = False
    rows: int = 24
    cols: int = 80
    term: str = "xterm-256color"
    log_cap: int | None = None  # bytes of output kept in the guest (4 KiB..1 GiB)


class SessionListParams(msgspec.Struct, forbid_unknown_fields=True):
    vm: str | None = None  # None: every running VM


class SessionRef(msgspec.Struct, forbid_unknown_fields=True):
    vm: str
    name: str


class SessionLogsParams(msgspec.Struct, forbid_unknown_fields=True):
    vm: str
    name: str
    follow: bool = False
    tail: int | None = None  # the last N lines; None: everything kept


class SessionStopParams(msgspec.Struct, forbid_unknown_fields=True):
    vm: str
    name: str
    grace: float = 10.0  # seconds between SIGTERM and SIGKILL


class SessionRmParams(msgspec.Struct, forbid_unknown_fields=True):
    vm: str
    name: str
    force: bool = False


class SessionSendParams(msgspec.Struct, forbid_unknown_fields=True):
    vm: str
    name: str
    eof: bool = False  # then close the session's stdin (^D on a terminal)
    # The bytes follow the request as binary stdin frames, then a stdin_eof line.


class SessionAttachParams(msgspec.Struct, forbid_unknown_fields=True):
    vm: str
    name: str
    write: bool = True  # ask for the writer's seat; a second attach gets read-only
    rows: int = 24
    cols: int = 80
    lines: int = 20  # recent lines shown first


class SessionRow(msgspec.Struct):
    vm: str
    name: str
    state: str  # running | exited
    argv: list[str]
    cwd: str
    tty: bool
    pid: int | None
    started: float | None  # epoch seconds, guest clock
    ended: float | None
    exit_code: int | None
    signal: int | None
    lost: bool  # exited without a status: the guest rebooted under it
    log_start: int  # oldest kept byte of output (earlier ones were dropped at the cap)
    log_end: int
    log_cap: int


class SessionLogsResult(msgspec.Struct):
    start: int  # offset of the first byte sent
    end: int
    session: SessionRow


class SessionAttachResult(msgspec.Struct):
    writer: bool
    session: SessionRow


class SessionSendResult(msgspec.Struct):
    bytes: int


SESSION_START = Method("session.start", SessionStartParams, "SessionRow",
                       "Start a command as a guest-owned session; returns it running.")
SESSION_LIST = Method("session.list", SessionListParams, "list[SessionRow]",
                      "Sessions of one VM, or of every running VM.")
SESSION_SHOW = Method("session.show", SessionRef, "SessionRow",
                      "A session's state, command, pid, times and exit status.")
SESSION_LOGS = Method("session.logs", SessionLogsParams, "SessionLogsResult",
                      "A session's kept output as stdout data; follow=true until it exits.")
SESSION_STOP = Method("session.stop", SessionStopParams, "SessionRow",
                      "SIGTERM a session's process group, SIGKILL after the grace period.")
SESSION_KILL = Method("session.kill", SessionRef, "SessionRow",
                      "SIGKILL a session's process group.")
SESSION_RM = Method("session.rm", SessionRmParams, "SessionRow",
                    "Remove an exited session and its log (force=true kills a running one).")
SESSION_SEND = Method("session.send", SessionSendParams, "SessionSendResult",
                      "Write bytes to a running session's stdin.")
SESSION_ATTACH = Method("session.attach", SessionAttachParams, "SessionAttachResult",
                        "Stream a session's output live and, for the one writer, its input.")
