"""The operations table: the daemon's history of long RPC operations, newest kept, oldest dropped."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from banger.store import Store
from banger.textsafe import one_line

HISTORY = 1000  # rows kept; older ones go as new operations start
RUNNING = "running"


class OperationRecord(msgspec.Struct):
    id: str
    method: str
    state: str  # running | done | failed | cancelled | interrupted (the daemon stopped first)
    started_at: str
    ended_at: str | None = None
    error: str | None = None


def _now() -> str:
    # Milliseconds: most operations take well under a second.
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class OperationRepo:
    def __init__(self, store: Store) -> None:
        self.store = store

    def start(self, op_id: str, method: str) -> None:
        with self.store.tx() as c:
            c.execute("INSERT OR REPLACE INTO operations (id, method, state, started_at) "
                      "VALUES (?,?,?,?)", (op_id, method, RUNNING, _now()))
            c.execute("DELETE FROM operations WHERE rowid NOT IN (SELECT rowid FROM operations "
                      "ORDER BY started_at DESC, rowid DESC LIMIT ?)", (HISTORY,))

    def finish(self, op_id: str, state: str, error: str | None) -> None:
        with self.store.tx() as c:
            c.execute("UPDATE operations SET state=?, ended_at=?, error=? WHERE id=?",
                      (state, _now(), error and one_line(error, 1000), op_id))

    def interrupt_unfinished(self) -> int:
        """Operations a previous daemon left running (it was killed): marked interrupted."""
        with self.store.tx() as c:
            return c.execute("UPDATE operations SET state='interrupted' WHERE state=?",
                             (RUNNING,)).rowcount

    def recent(self, limit: int) -> list[OperationRecord]:
        """The newest `limit` operations, newest first."""
        rows = self.store.query("SELECT id, method, state, started_at, ended_at, error "
                                "FROM operations ORDER BY started_at DESC, rowid DESC LIMIT ?",
                                (limit,))
        return [OperationRecord(**dict(row)) for row in rows]
