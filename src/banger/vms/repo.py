"""VM rows in the store, mapped to `VmRecord` and back by field name (never by position)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from banger.errors import Conflict, NotFound
from banger.store import Store
from banger.store.db import utcnow
from banger.textsafe import one_line
from banger.vms.model import VmRecord, VmState


def _same(value: Any) -> Any:
    return value


def _json_or_null(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _from_json_or_none(text: str | None) -> Any:
    return json.loads(text) if text else None


@dataclass(frozen=True)
class Column:
    """One VmRecord field and the vms column that stores it."""

    field: str
    name: str
    to_db: Callable[[Any], Any] = _same
    from_db: Callable[[Any], Any] = _same


_STORED_AS = {
    "workspace": Column("workspace", "workspace_json", _json_or_null, _from_json_or_none),
    "publish": Column("publish", "publish_json", json.dumps, lambda text: json.loads(text or "[]")),
    "nat": Column("nat", "nat", int, bool),
    "egress": Column("egress", "egress_json", json.dumps, lambda text: json.loads(text or "[]")),
}
COLUMNS: tuple[Column, ...] = tuple(_STORED_AS.get(f, Column(f, f))
                                    for f in VmRecord.__struct_fields__)
_BY_FIELD = {c.field: c for c in COLUMNS}


def to_record(row: sqlite3.Row) -> VmRecord:
    return VmRecord(**{c.field: c.from_db(row[c.name]) for c in COLUMNS})


def to_row(vm: VmRecord) -> dict[str, Any]:
    return {c.name: c.to_db(getattr(vm, c.field)) for c in COLUMNS}


class VmRepo:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.on_change: Callable[[], None] = lambda: None  # the .vm zone file republishes here

    def insert(self, vm: VmRecord) -> None:
        row = to_row(vm)
        names = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        try:
            with self.store.tx() as c:
                c.execute(f"INSERT INTO vms ({names}) VALUES ({marks})",  # names from COLUMNS
                          tuple(row.values()))
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"a VM named {vm.name!r} already exists; pick another --name") from exc
        self.on_change()

    def all(self) -> list[VmRecord]:
        return [to_record(r) for r in self.store.query("SELECT * FROM vms ORDER BY created_at, name")]

    def addresses(self) -> dict[str, set[str]]:
        """Addresses held per network mode (for allocating the next one)."""
        held: dict[str, set[str]] = {"tap": set(), "user": set()}
        for r in self.store.query("SELECT net_mode, ip FROM vms WHERE ip IS NOT NULL"):
            held.setdefault(r["net_mode"] or "user", set()).add(r["ip"])
        return held

    def running_address(self, name: str) -> str | None:
        """The host-reachable address of a running VM (what `<name>.vm` resolves to)."""
        rows = self.store.query("SELECT ip FROM vms WHERE name=? AND state=?", (name, VmState.RUNNING))
        return rows[0]["ip"] if rows and rows[0]["ip"] else None

    def running_addresses(self) -> dict[str, str]:
        """Every running VM's name -> address (what the `.vm` zone file holds)."""
        rows = self.store.query("SELECT name, ip FROM vms WHERE state=? AND ip IS NOT NULL",
                                (VmState.RUNNING,))
        return {r["name"]: r["ip"] for r in rows}

    def names(self) -> set[str]:
        return {r["name"] for r in self.store.query("SELECT name FROM vms")}

    def find(self, ref: str) -> VmRecord:
        """By exact name, exact id, or a unique id prefix (>= 4 chars)."""
        rows = self.store.query("SELECT * FROM vms WHERE name=? OR id=?", (ref, ref))
        if not rows and len(ref) >= 4:
            rows = self.store.query("SELECT * FROM vms WHERE id LIKE ?", (ref + "%",))
            if len(rows) > 1:
                raise Conflict(f"{ref!r} matches {len(rows)} VMs; use more of the id or the name")
        if not rows:
            raise NotFound(f"no VM named {ref!r}; `banger vm list` shows them")
        return to_record(rows[0])

    def set_state(self, vm_id: str, state: VmState, *, error: str | None = None,
                  keep_error: bool = False) -> None:
        with self.store.tx() as c:
            if keep_error:
                c.execute("UPDATE vms SET state=?, updated_at=? WHERE id=?",
                          (state, utcnow(), vm_id))
            else:
                c.execute("UPDATE vms SET state=?, last_error=?, updated_at=? WHERE id=?",
                          (state, error and one_line(error, 1000), utcnow(), vm_id))  # guest text
        self.on_change()

    _UPDATABLE = frozenset({"vcpu", "memory_mib", "disk_mib", "ip", "workspace", "name", "publish",
                             "egress"})

    def update(self, vm_id: str, **fields: Any) -> None:
        """Set record fields by name (stored through the same mapping as insert)."""
        if not fields or not set(fields) <= self._UPDATABLE:
            raise ValueError(f"not updatable VM fields: {sorted(set(fields) - self._UPDATABLE)}")
        columns = [_BY_FIELD[f] for f in fields]
        sets = ", ".join(f"{c.name}=?" for c in columns)
        values = [c.to_db(fields[c.field]) for c in columns]
        with self.store.tx() as c:
            c.execute(f"UPDATE vms SET {sets}, updated_at=? WHERE id=?",  # names from COLUMNS
                      (*values, utcnow(), vm_id))
        self.on_change()

    def delete(self, vm_id: str) -> None:
        with self.store.tx() as c:
            c.execute("DELETE FROM vms WHERE id=?", (vm_id,))
        self.on_change()

    def refuse_if_used(self, kind: str, name: str) -> None:
        """Conflict naming the VMs that use image/kernel `name`."""
        column = {"image": "image", "kernel": "kernel"}[kind]
        rows = self.store.query(f"SELECT name FROM vms WHERE {column}=? ORDER BY name", (name,))
        users = [r["name"] for r in rows]
        if users:
            raise Conflict(f"{kind} {name!r} is used by VM {', '.join(users)}; delete "
                           f"{'it' if len(users) == 1 else 'them'} first")
