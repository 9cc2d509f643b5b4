"""`banger image catalog|list|show|pull|delete|export|import`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from banger.cli import session
from banger.cli.output import print_catalog, print_json, print_table, say
from banger.rpc.methods import NameParams, NoParams
from banger.rpc.methods import image as rpc


def _human(n: int) -> str:
    from banger.download import human_bytes

    return human_bytes(n)


@click.group()
def image() -> None:
    """Root filesystem images: built from recipes, fetched as bundles, or pulled from OCI registries."""


@image.command("catalog")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def image_catalog(as_json: bool) -> None:
    """Images banger knows how to build or fetch."""
    print_catalog(session.call(rpc.IMAGE_CATALOG, NoParams()), as_json)


@image.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def image_list(as_json: bool) -> None:
    """Local images."""
    rows: list[dict[str, Any]] = session.call(rpc.IMAGE_LIST, NoParams())
    if as_json:
        print_json(rows)
        return
    print_table(["NAME", "DISTRO", "ARCH", "SIZE", "KERNEL", "BUILT"],
                [[r["name"], r["distro"], r["arch"], _human(r["size"]), r["kernel"], r["built"]]
                 for r in rows],
                empty="no images yet: `banger image pull NAME` (or just run a VM)")


@image.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the only view today).")
def image_show(name: str, as_json: bool) -> None:
    """Show an image's manifest (JSON)."""
    print_json(session.call(rpc.IMAGE_SHOW, NameParams(name)))


def _is_file_source(source: str) -> bool:
    """A bundle path (an OCI ref like registry:5000/team/img:tag also has a '/')."""
    if source.startswith(("http://", "https://", "file://")):
        return False
    if source.startswith(("/", "./", "../", "~")) or source.endswith(".tar.zst"):
        return True
    return "/" in source and Path(source).is_file()


def _pull(source: str, sha256: str | None, name: str | None,
          size: str | None = None, kernel: str | None = None) -> None:
    if _is_file_source(source):
        path = Path(source).expanduser()
        if not path.is_file():
            raise click.BadParameter(f"no such file: {source}", param_hint="SOURCE")
        source = str(path.resolve())
    params = rpc.ImagePullParams(source, sha256=sha256, name=name, size=size, kernel=kernel)
    m = session.call_with_progress(rpc.IMAGE_PULL, params)
    say(f"image {m['name']} ready ({_human(m['size'])}, sha256 {m['sha256'][:12]})")


@image.command("pull")
@click.argument("source")
@click.option("--sha256", help="Expected sha256 of a bundle file or URL.")
@click.option("--name", help="Register under this name (default: from the manifest or the ref).")
@click.option("--size", help="OCI refs: ext4 size such as 4G (default: content x 1.5, >= 1G).")
@click.option("--kernel", help="OCI refs: kernel to boot it with (default: debian-bookworm-cloud).")
def image_pull(source: str, sha256: str | None, name: str | None, size: str | None,
               kernel: str | None) -> None:
    """Build or fetch an image: a catalog NAME, a bundle FILE or URL, or an OCI REF.

    OCI refs look like debian:bookworm, registry:5000/team/img:tag or img@sha256:HEX.
    """
    _pull(source, sha256, name, size, kernel)


@image.group("cache")
def image_cache() -> None:
    """The OCI blob cache shared by `image pull REF`."""


@image_cache.command("prune")
@click.option("--dry-run", is_flag=True, help="Only report what would be freed.")
def image_cache_prune(dry_run: bool) -> None:
    """Delete cached blobs that no pulled reference uses any more."""
    res = session.call_with_progress(rpc.IMAGE_CACHE_PRUNE, rpc.CachePruneParams(dry_run))
    verb = "would free" if dry_run else "freed"
    click.echo(f"{verb} {_human(res['bytes'])} in {res['blobs']} blobs "
               f"({res['kept']} blobs still in use)")


@image.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--sha256", required=True, help="Expected sha256 of the bundle.")
@click.option("--name", help="Register under this name instead of the manifest's.")
def image_import(file: str, sha256: str, name: str | None) -> None:
    """Import a bundle file written by `banger image export`."""
    _pull(str(Path(file).resolve()), sha256, name)


@image.command("export")
@click.argument("name")
@click.option("-o", "--output", "out_dir", default=".", show_default=True,
              type=click.Path(file_okay=False, exists=True), help="Directory to write into.")
def image_export(name: str, out_dir: str) -> None:
    """Write NAME-ARCH-SHA.tar.zst holding rootfs.ext4 and manifest.json."""
    params = rpc.ImageExportParams(name, str(Path(out_dir).resolve()))
    res = session.call_with_progress(rpc.IMAGE_EXPORT, params)
    say(res["path"])
    say(f"sha256 {res['sha256']}  ({_human(res['size'])})", err=True)


@image.command("delete")
@click.argument("name")
def image_delete(name: str) -> None:
    """Delete a local image (refused while a VM uses it)."""
    session.call(rpc.IMAGE_DELETE, NameParams(name))
    click.echo(f"deleted image {name}")
