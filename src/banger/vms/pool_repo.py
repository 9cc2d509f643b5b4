"""The warm pool's configuration in the store: a size per VM shape, so a restarted daemon refills."""

from __future__ import annotations

import msgspec

from banger.store import Store


class Shape(msgspec.Struct, frozen=True):
    """What a pooled clone must share with a `vm create` to be handed to it."""

    image: str
    vcpu: int
    memory_mib: int
    net_mode: str  # as the default create resolves it ("user"; "" for no NIC)


class PoolRepo:
    def __init__(self, store: Store) -> None:
        self.store = store

    def sizes(self) -> dict[Shape, int]:
        rows = self.store.query("SELECT image, vcpu, memory_mib, net_mode, size FROM pool "
                                "ORDER BY image, vcpu, memory_mib, net_mode")
        return {Shape(r["image"], int(r["vcpu"]), int(r["memory_mib"]), r["net_mode"]):
                int(r["size"]) for r in rows}

    def set(self, shape: Shape, size: int) -> None:
        with self.store.tx() as c:
            if size == 0:
                c.execute("DELETE FROM pool WHERE image=? AND vcpu=? AND memory_mib=? AND "
                          "net_mode=?", (shape.image, shape.vcpu, shape.memory_mib,
                                         shape.net_mode))
                return
            c.execute("INSERT INTO pool (image, vcpu, memory_mib, net_mode, size) "
                      "VALUES (?,?,?,?,?) ON CONFLICT (image, vcpu, memory_mib, net_mode) "
                      "DO UPDATE SET size=excluded.size",
                      (shape.image, shape.vcpu, shape.memory_mib, shape.net_mode, size))
