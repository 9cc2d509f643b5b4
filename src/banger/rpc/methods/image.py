"""image.* methods: the catalog, pulls (catalog, bundle, URL, OCI), export, delete, cache prune."""

from __future__ import annotations

import msgspec

from banger.rpc.methods import Method, NameParams, NoParams


class ImagePullParams(msgspec.Struct, forbid_unknown_fields=True):
    source: str  # a catalog name, a bundle file path (absolute), an http(s) URL or an OCI ref
    sha256: str | None = None
    name: str | None = None
    size: str | None = None  # OCI pulls: ext4 size such as 4G (default: content x 1.5, >= 1 GiB)
    kernel: str | None = None  # OCI pulls: the kernel recorded in the manifest


class CachePruneParams(msgspec.Struct, forbid_unknown_fields=True):
    dry_run: bool = False


class CachePruneResult(msgspec.Struct):
    blobs: int
    bytes: int
    kept: int
    dry_run: bool


class ImageExportParams(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    out_dir: str  # absolute, existing


class ImageExportResult(msgspec.Struct):
    path: str
    sha256: str
    size: int


class Deleted(msgspec.Struct):
    deleted: str


IMAGE_CATALOG = Method("image.catalog", NoParams, "list[CatalogRow]",
                       "Images banger knows how to get, and which are pulled.")
IMAGE_LIST = Method("image.list", NoParams, "list[ImageManifest]", "Pulled images' manifests.")
IMAGE_SHOW = Method("image.show", NameParams, "ImageManifest", "One image's manifest.")
IMAGE_PULL = Method("image.pull", ImagePullParams, "ImageManifest",
                    "Get an image from the catalog, a bundle file or URL, or an OCI registry.",
                    long=True)
IMAGE_CACHE_PRUNE = Method("image.cache_prune", CachePruneParams, "CachePruneResult",
                           "Remove OCI blobs no pulled image needs.", long=True)
IMAGE_DELETE = Method("image.delete", NameParams, "Deleted", "Delete an image no VM uses.")
IMAGE_EXPORT = Method("image.export", ImageExportParams, "ImageExportResult",
                      "Write an image as a bundle file with its sha256.", long=True)
