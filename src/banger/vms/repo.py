"""VM rows in the store."""

from __future__ import annotations

import json
import sqlite3

from banger.errors import Conflict, NotFound
from banger.store import Store
from banger.store.db import utcnow
from banger.textsafe import one_line
from banger.vms.model import VmRecord, VmState


def _record(row: sqlite3.Row) -> VmRecord:
    workspace = json.loads(row["workspace_json"]) if row["workspace_json"] else None
    return VmRecord(row["id"], row["name"], row["state"], row["image"], row["kernel"], row["vcpu"],
                    row["memory_mib"], row["disk_mib"], row["created_at"], row["updated_at"],
                    row["ip"], row["last_error"], workspace, row["net_mode"], row["mac"],
                    bool(row["nat"]), json.loads(row["publish_json"] or "[]"))


class VmRepo:
    def __init__(self, store: Store) -> None:
        self.store = store

    def insert(self, vm: VmRecord) -> None:
        try:
            with self.store.tx() as c:
                c.execute(
                    "INSERT INTO vms (id, name, state, image, kernel, vcpu, memory_mib, disk_mib, "
                    "created_at, updated_at, ip, net_mode, mac, nat, publish_json) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (vm.id, vm.name, vm.state, vm.image, vm.kernel, vm.vcpu, vm.memory_mib,
                     vm.disk_mib, vm.created_at, vm.updated_at, vm.ip, vm.net_mode, vm.mac,
                     int(vm.nat), json.dumps(vm.publish)),
                )
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"a VM named {vm.name!r} already exists; pick another --name") from exc

    def all(self) -> list[VmRecord]:
        return [_record(r) for r in self.store.query("SELECT * FROM vms ORDER BY created_at, name")]

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
        return _record(rows[0])

    def set_state(self, vm_id: str, state: VmState, *, error: str | None = None,
                  keep_error: bool = False) -> None:
        with self.store.tx() as c:
            if keep_error:
                c.execute("UPDATE vms SET state=?, updated_at=? WHERE id=?",
                          (state, utcnow(), vm_id))
            else:
                c.execute("UPDATE vms SET state=?, last_error=?, updated_at=? WHERE id=?",
                          (state, error and one_line(error, 1000), utcnow(), vm_id))  # guest text

    def update(self, vm_id: str, **fields: object) -> None:
        allowed = {"vcpu", "memory_mib", "disk_mib", "ip", "workspace_json", "name",
                   "publish_json"}
        assert set(fields) <= allowed, fields
        sets = ", ".join(f"{k}=?" for k in fields)
        with self.store.tx() as c:
            c.execute(f"UPDATE vms SET {sets}, updated_at=? WHERE id=?",  # keys checked above
                      (*fields.values(), utcnow(), vm_id))

    def delete(self, vm_id: str) -> None:
        with self.store.tx() as c:
            c.execute("DELETE FROM vms WHERE id=?", (vm_id,))

    def refuse_if_used(self, kind: str, name: str) -> None:
        """Conflict naming the VMs that use image/kernel `name`."""
        column = {"image": "image", "kernel": "kernel"}[kind]
        rows = self.store.query(f"SELECT name FROM vms WHERE {column}=? ORDER BY name", (name,))
        users = [r["name"] for r in rows]
        if users:
            raise Conflict(f"{kind} {name!r} is used by VM {', '.join(users)}; delete "
                           f"{'it' if len(users) == 1 else 'them'} first")
