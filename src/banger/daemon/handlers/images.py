"""image.* methods."""

from __future__ import annotations

import asyncio
from pathlib import Path

from banger.daemon.context import Context
from banger.daemon.registry import method
from banger.errors import InvalidArgument
from banger.images import catalog
from banger.images.manifest import ImageManifest, delete_image, get_image, list_images
from banger.rpc.methods import CatalogRow, NameParams, NoParams
from banger.rpc.methods.image import (
    IMAGE_CACHE_PRUNE,
    IMAGE_CATALOG,
    IMAGE_DELETE,
    IMAGE_EXPORT,
    IMAGE_LIST,
    IMAGE_PULL,
    IMAGE_SHOW,
    CachePruneParams,
    CachePruneResult,
    Deleted,
    ImageExportParams,
    ImageExportResult,
    ImagePullParams,
)
from banger.vms.repo import VmRepo


@method(IMAGE_CATALOG)
async def image_catalog(ctx: Context, _: NoParams) -> list[CatalogRow]:
    cat = catalog.load_catalog()
    local = {m.name for m in list_images(ctx.daemon.paths)}
    return [CatalogRow(e.name, type(e).__name__.removesuffix("Entry").lower(), e.description,
                       "pulled" if e.name in local else "available", e.name == cat.default)
            for e in cat.entries]


@method(IMAGE_LIST)
async def image_list(ctx: Context, _: NoParams) -> list[ImageManifest]:
    return list_images(ctx.daemon.paths)


@method(IMAGE_SHOW)
async def image_show(ctx: Context, p: NameParams) -> ImageManifest:
    return get_image(ctx.daemon.paths, p.name)


async def _pull_oci(ctx: Context, p: ImagePullParams) -> ImageManifest:
    from banger.config.sizes import parse_size_bytes
    from banger.images.oci.pull import PullOptions, pull_oci

    if p.sha256:
        raise InvalidArgument("--sha256 applies to bundle files and URLs, not OCI references")
    kernel = p.kernel or catalog.DEFAULT_KERNEL
    ctx.daemon.artifacts.check_known(kernel=kernel)
    size = parse_size_bytes(p.size, what="--size") if p.size else None
    opts = PullOptions(name=p.name, size=size, kernel=kernel,
                       insecure_registries=list(ctx.daemon.config.oci_insecure_registries))
    return await pull_oci(ctx.daemon.paths, p.source, ctx.progress, opts)


@method(IMAGE_PULL)
async def image_pull(ctx: Context, p: ImagePullParams) -> ImageManifest:
    from banger.images.oci.ref import looks_like_oci_ref

    is_file = p.source.startswith("/")
    is_url = p.source.startswith(("http://", "https://", "file://"))
    if looks_like_oci_ref(p.source, catalog.load_catalog().names()):
        manifest = await _pull_oci(ctx, p)
    elif p.size or p.kernel:
        raise InvalidArgument("--size and --kernel apply to OCI references such as debian:bookworm")
    elif is_file or is_url:
        from banger.images.bundle import import_bundle

        if not p.sha256:
            raise InvalidArgument("pulling a bundle file or URL needs --sha256 HEX")
        source: Path | str = Path(p.source) if is_file else p.source
        manifest = await import_bundle(ctx.daemon.paths, source, p.sha256, ctx.progress, p.name)
    else:
        if p.sha256:
            raise InvalidArgument("--sha256 applies to bundle files and URLs, not catalog names")
        files = await ctx.daemon.artifacts.image(p.source, ctx.progress)
        manifest = files.manifest
    return manifest


@method(IMAGE_CACHE_PRUNE)
async def image_cache_prune(ctx: Context, p: CachePruneParams) -> CachePruneResult:
    from banger.images.oci.pull import prune_cache

    report = await prune_cache(ctx.daemon.paths, dry_run=p.dry_run)
    return CachePruneResult(report.blobs, report.bytes, report.kept, p.dry_run)


@method(IMAGE_DELETE)
async def image_delete(ctx: Context, p: NameParams) -> Deleted:
    VmRepo(ctx.daemon.store).refuse_if_used("image", p.name)
    delete_image(ctx.daemon.paths, p.name)
    return Deleted(p.name)


@method(IMAGE_EXPORT)
async def image_export(ctx: Context, p: ImageExportParams) -> ImageExportResult:
    from banger.images.bundle import export_bundle
    from banger.images.manifest import sha256_file

    out = Path(p.out_dir)
    if not out.is_absolute() or not out.is_dir():
        raise InvalidArgument(f"output directory {p.out_dir!r} does not exist")
    get_image(ctx.daemon.paths, p.name)
    ctx.progress("export", None, f"compressing {p.name}")
    path = await asyncio.to_thread(export_bundle, ctx.daemon.paths, p.name, out)
    ctx.progress("checksum", None, path.name)
    digest = await asyncio.to_thread(sha256_file, path)
    return ImageExportResult(str(path), digest, path.stat().st_size)
