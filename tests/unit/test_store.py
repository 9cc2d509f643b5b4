import sqlite3
from pathlib import Path

import pytest

from banger.errors import OperationFailed
from banger.store import Store
from banger.store.migrations import MIGRATIONS


def test_migrations_apply_to_empty_db_and_are_idempotent(tmp_path: Path) -> None:
    store = Store(tmp_path / "b.db")
    assert store.schema_version() == 0
    applied = store.migrate()
    assert applied == [v for v, _, _ in MIGRATIONS]
    assert store.migrate() == []
    assert store.schema_version() == MIGRATIONS[-1][0]
    tables = {r[0] for r in store.query("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"vms", "images", "kernels", "operations", "schema_migrations"} <= tables
    assert store.query("PRAGMA journal_mode")[0][0] == "wal"
    assert store.query("PRAGMA foreign_keys")[0][0] == 1


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    store = Store(tmp_path / "b.db")
    store.migrate()
    with store.tx() as c:
        c.execute("INSERT INTO schema_migrations VALUES (999, 'future', 'now')")
    with pytest.raises(OperationFailed, match="newer than this banger"):
        store.migrate()


def test_failed_transaction_rolls_back(tmp_path: Path) -> None:
    store = Store(tmp_path / "b.db")
    store.migrate()
    with pytest.raises(sqlite3.IntegrityError), store.tx() as c:
        c.execute("INSERT INTO operations (id, method, state, started_at) VALUES "
                  "('op-1', 'x', 'running', 'now')")
        c.execute("INSERT INTO vms (id, name, state, image, kernel, vcpu, memory_mib, disk_mib,"
                  " created_at, updated_at) VALUES ('a','n','created','i','k',0,1,1,'t','t')")
    assert store.query("SELECT * FROM operations") == []
