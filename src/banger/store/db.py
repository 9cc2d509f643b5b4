"""SQLite connection setup (WAL, busy timeout, foreign keys) and the migration runner."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from banger.durable import NEW_FILE
from banger.errors import OperationFailed
from banger.store.migrations import MIGRATIONS


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _create_private(path: Path) -> None:
    # An existing database keeps its mode; the daemon tightens old installs on start.
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, NEW_FILE, 0o600))


class Store:
    """One connection, one write lock: the daemon is a single process."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self._lock = threading.RLock()
        try:
            if readonly:
                uri = f"file:{path}?mode=ro"
                self.conn = sqlite3.connect(uri, uri=True, timeout=5.0, check_same_thread=False)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                _create_private(path)  # SQLite gives its -wal and -shm files the same mode
                self.conn = sqlite3.connect(path, timeout=5.0, check_same_thread=False)
                self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.row_factory = sqlite3.Row
            self.conn.execute("PRAGMA busy_timeout=5000")
            self.conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise OperationFailed(f"cannot open the state database {path}: {exc}") from exc

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: committed on success, rolled back on any error."""
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.rollback()
                raise
            self.conn.commit()

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self.conn.execute(sql, args))

    def schema_version(self) -> int:
        with self._lock:
            has_table = self.conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_migrations'"
            ).fetchone()
            if not has_table:
                return 0
            row = self.conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
            return int(row[0] or 0)

    def migrate(self) -> list[int]:
        """Apply pending migrations in order; returns the versions applied (idempotent)."""
        applied: list[int] = []
        latest = max(v for v, _, _ in MIGRATIONS)
        with self.tx() as c:
            c.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            current = int(c.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] or 0)
            if current > latest:
                raise OperationFailed(
                    f"state database {self.path} is schema v{current}, newer than this banger "
                    f"(v{latest}); upgrade banger"
                )
            for version, description, sql in MIGRATIONS:
                if version <= current:
                    continue
                for statement in sql.split(";"):
                    if statement.strip():
                        c.execute(statement)
                c.execute(
                    "INSERT INTO schema_migrations (version, description, applied_at) VALUES (?,?,?)",
                    (version, description, utcnow()),
                )
                applied.append(version)
        return applied
