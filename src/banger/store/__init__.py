"""Durable state in SQLite: VMs, images, kernels, operations."""

from banger.store.db import Store

__all__ = ["Store"]
