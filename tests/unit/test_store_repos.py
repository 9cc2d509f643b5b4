"""The repo modules over a real SQLite store: VM rows by field name, the operations history."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from banger.daemon import operations_repo
from banger.daemon.operations_repo import OperationRepo
from banger.store import Store
from banger.vms.model import VmRecord, VmState
from banger.vms.repo import VmRepo


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "b.db")
    s.migrate()
    return s


def every_field_set() -> VmRecord:
    """A record where no field holds its default and no two fields hold the same value."""
    return VmRecord(id="id-1", name="web", state=VmState.RUNNING, image="img-2", kernel="k-3",
                    vcpu=3, memory_mib=1536, disk_mib=4096, created_at="t-4", updated_at="t-5",
                    ip="10.77.0.6", last_error="err-7", workspace={"guest_path": "/root/w8"},
                    net_mode="tap", mac="52:54:00:00:00:09", nat=True, publish=["8010:10"],
                    owner_pid=11, owner_start="boot-12:13")


def test_the_sample_record_sets_every_field_apart() -> None:
    vm = every_field_set()
    values = [getattr(vm, f) for f in VmRecord.__struct_fields__]
    defaults = VmRecord.__struct_defaults__
    optional = VmRecord.__struct_fields__[-len(defaults):]
    assert all(getattr(vm, f) != d for f, d in zip(optional, defaults, strict=True))
    assert len({repr(v) for v in values}) == len(values)


def test_every_field_round_trips(store: Store) -> None:
    vm = every_field_set()
    VmRepo(store).insert(vm)
    assert VmRepo(store).find("web") == vm
    assert VmRepo(store).all() == [vm]


def test_rows_read_right_whatever_the_column_order(store: Store) -> None:
    vm = every_field_set()
    VmRepo(store).insert(vm)
    columns = [r["name"] for r in store.query("PRAGMA table_info(vms)")]
    shuffled = ", ".join(reversed(columns))
    with store.tx() as c:
        c.execute(f"CREATE TABLE vms_reordered AS SELECT {shuffled} FROM vms")
        c.execute("DROP TABLE vms")
        c.execute("ALTER TABLE vms_reordered RENAME TO vms")
    assert [r["name"] for r in store.query("PRAGMA table_info(vms)")] == columns[::-1]
    assert VmRepo(store).find("web") == vm
    VmRepo(store).insert(msgspec.structs.replace(vm, id="id-2", name="db"))
    assert VmRepo(store).find("db").publish == ["8010:10"]


def test_update_stores_fields_through_the_same_mapping(store: Store) -> None:
    repo = VmRepo(store)
    repo.insert(msgspec.structs.replace(every_field_set(), workspace=None, publish=[]))
    repo.update("id-1", workspace={"guest_path": "/root/repo"}, publish=["8080:80"], vcpu=2)
    vm = repo.find("web")
    assert (vm.workspace, vm.publish, vm.vcpu) == ({"guest_path": "/root/repo"}, ["8080:80"], 2)
    with pytest.raises(ValueError, match="state"):
        repo.update("id-1", state="running")


def test_operations_newest_first_with_outcome(store: Store) -> None:
    ops = OperationRepo(store)
    ops.start("op-00000001", "vm.create")
    ops.finish("op-00000001", "failed", "no image\nnamed x")
    ops.start("op-00000002", "image.pull")
    first, second = ops.recent(10)
    assert (first.id, first.state, first.ended_at) == ("op-00000002", "running", None)
    assert (second.method, second.state, second.error) == ("vm.create", "failed", "no image | named x")
    assert second.ended_at is not None and second.ended_at >= second.started_at
    assert [o.id for o in ops.recent(1)] == ["op-00000002"]


def test_operations_history_keeps_the_newest(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(operations_repo, "HISTORY", 5)
    ops = OperationRepo(store)
    for i in range(8):
        ops.start(f"op-0000000{i}", "vm.start")
    assert [o.id for o in ops.recent(100)] == [f"op-0000000{i}" for i in range(7, 2, -1)]


def test_operations_a_dead_daemon_left_running_become_interrupted(store: Store) -> None:
    ops = OperationRepo(store)
    ops.start("op-00000001", "vm.start")
    ops.start("op-00000002", "vm.stop")
    ops.finish("op-00000002", "done", None)
    assert ops.interrupt_unfinished() == 1
    assert {o.id: o.state for o in ops.recent(10)} == {"op-00000001": "interrupted",
                                                        "op-00000002": "done"}
