"""pool.* methods: the warm pool of paused template clones (`banger vm pool`)."""

from __future__ import annotations

import msgspec

from banger.rpc.methods import Method, NoParams


class PoolSetParams(msgspec.Struct, forbid_unknown_fields=True):
    size: int
    image: str | None = None  # None: the configured default, as `vm create` picks it
    vcpu: int | None = None
    memory_mib: int | None = None


class PoolShapeInfo(msgspec.Struct):
    """One pooled shape: what is configured, what is ready, and what the ready clones cost."""

    image: str
    vcpu: int
    memory_mib: int
    net_mode: str
    size: int  # wanted
    ready: int  # paused clones waiting now
    filling: bool  # a clone of this shape is being restored right now
    pss_mib: float  # the ready clones' proportional memory on the host, summed
    error: str = ""  # why the last refill failed (retried later)


POOL_SET = Method("pool.set", PoolSetParams, "PoolShapeInfo",
                  "Keep `size` paused clones of a VM shape ready (0 stops and drains it).")
POOL_LIST = Method("pool.list", NoParams, "list[PoolShapeInfo]", "Pooled shapes and their clones.")
