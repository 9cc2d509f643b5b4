"""Daemon-level methods: ping, status, shutdown, the operations history."""

from __future__ import annotations

import msgspec

from banger.rpc.methods import Method, NoParams

MAX_OPERATIONS = 1000  # the history the daemon keeps


class Pong(msgspec.Struct):
    pong: str
    version: str


class Status(msgspec.Struct):
    version: str
    pid: int
    uptime_s: float
    socket: str
    state_dir: str
    schema_version: int


class ShutdownResult(msgspec.Struct):
    pid: int


class OperationsParams(msgspec.Struct, forbid_unknown_fields=True):
    limit: int = 20  # 1..MAX_OPERATIONS, newest first


PING = Method("ping", NoParams, "Pong", "Answer with the daemon's version.",
              api_only="a liveness probe for scripts and tests; `daemon status` says more")
DAEMON_STATUS = Method("daemon.status", NoParams, "Status",
                       "Version, pid, uptime, socket, state dir and schema version.")
DAEMON_SHUTDOWN = Method("daemon.shutdown", NoParams, "ShutdownResult",
                         "Reply, then stop: cancel running operations and remove the socket.")
DAEMON_OPERATIONS = Method("daemon.operations", OperationsParams, "list[OperationRecord]",
                           "The newest long operations: method, state, times, error.")
