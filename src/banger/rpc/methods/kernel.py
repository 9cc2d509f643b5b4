"""kernel.* methods: the catalog, pulls, show, delete."""

from __future__ import annotations

import msgspec

from banger.rpc.methods import Method, NameParams, NoParams


class KernelPullParams(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    force: bool = False


KERNEL_CATALOG = Method("kernel.catalog", NoParams, "list[CatalogRow]",
                        "Kernels banger knows how to get, and which are pulled.")
KERNEL_LIST = Method("kernel.list", NoParams, "list[KernelManifest]", "Pulled kernels' manifests.")
KERNEL_SHOW = Method("kernel.show", NameParams, "KernelManifest", "One kernel's manifest.")
KERNEL_PULL = Method("kernel.pull", KernelPullParams, "KernelManifest",
                     "Fetch and verify a catalog kernel (force=true fetches it again).", long=True)
KERNEL_DELETE = Method("kernel.delete", NameParams, "KernelManifest", "Delete a kernel no VM uses.")
