import sqlite3
from pathlib import Path

import pytest

from banger.errors import OperationFailed
from banger.store import Store
from banger.store import db as store_db
from banger.store.migrations import MIGRATIONS
from banger.vms.repo import VmRepo


def test_migrations_apply_to_empty_db_and_are_idempotent(tmp_path: Path) -> None:
    store = Store(tmp_path / "b.db")
    assert store.schema_version() == 0
    applied = store.migrate()
    assert applied == [v for v, _, _ in MIGRATIONS]
    assert store.migrate() == []
    assert store.schema_version() == MIGRATIONS[-1][0]
    tables = {r[0] for r in store.query("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"vms", "operations", "pool", "schema_migrations"}
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


def test_a_v2_database_with_vms_migrates_and_keeps_them(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path / "b.db")
    with monkeypatch.context() as m:
        m.setattr(store_db, "MIGRATIONS", [mig for mig in MIGRATIONS if mig[0] <= 2])
        assert store.migrate() == [1, 2]
    with store.tx() as c:
        c.execute("INSERT INTO vms (id, name, state, image, kernel, vcpu, memory_mib, disk_mib, ip,"
                  " last_error, spec_json, workspace_json, created_at, updated_at, net_mode, mac,"
                  " nat, publish_json) VALUES ('abc123', 'web', 'stopped', 'debian-bookworm',"
                  " 'k1', 2, 2048, 8192, '10.77.0.2', 'boom', '{\"x\": 1}',"
                  " '{\"guest_path\": \"/root/repo\"}', 't0', 't1', 'tap', '52:54:00:00:00:02',"
                  " 1, '[\"8080:80\"]')")
        c.execute("INSERT INTO images (name, kind, path, created_at) VALUES ('i', 'x', '/p', 't')")
    assert store.migrate() == [3, 4, 5, 6]
    vm = VmRepo(store).find("web")
    assert (vm.owner_pid, vm.owner_start) == (None, None)  # VMs made before --rm had an owner
    assert (vm.id, vm.state, vm.vcpu, vm.memory_mib, vm.disk_mib, vm.ip, vm.last_error) == (
        "abc123", "stopped", 2, 2048, 8192, "10.77.0.2", "boom")
    assert (vm.workspace, vm.net_mode, vm.mac, vm.nat, vm.publish) == (
        {"guest_path": "/root/repo"}, "tap", "52:54:00:00:00:02", True, ["8080:80"])
    columns = {r["name"] for r in store.query("PRAGMA table_info(vms)")}
    assert "spec_json" not in columns
    tables = {r[0] for r in store.query("SELECT name FROM sqlite_master WHERE type='table'")}
    assert not {"images", "kernels"} & tables
