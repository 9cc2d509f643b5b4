"""The image catalog shipped in the package: recipes to build, bundles to pull, OCI refs (later)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import msgspec

from banger.catalogs import close_names, decode
from banger.errors import InvalidArgument, NotFound

DEFAULT_KERNEL = "debian-bookworm-cloud"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class RecipeEntry(msgspec.Struct, tag_field="kind", tag="recipe", frozen=True, kw_only=True):
    """Built locally with mmdebstrap from the Debian mirror."""

    name: str
    description: str = ""
    distro: str = "debian"
    suite: str = "bookworm"
    variant: str = "minbase"
    systemd: bool = False
    kernel: str = DEFAULT_KERNEL
    packages: list[str] = []


class BundleEntry(msgspec.Struct, tag_field="kind", tag="bundle", frozen=True, kw_only=True):
    """A published `.tar.zst` holding rootfs.ext4 + manifest.json, pinned by sha256."""

    name: str
    url: str
    sha256: str
    description: str = ""
    size: int | None = None
    kernel: str = DEFAULT_KERNEL


class OciEntry(msgspec.Struct, tag_field="kind", tag="oci", frozen=True, kw_only=True):
    """An OCI image reference, flattened into ext4 by the OCI pull (not built yet)."""

    name: str
    ref: str
    description: str = ""
    kernel: str = DEFAULT_KERNEL


CatalogEntry = RecipeEntry | BundleEntry | OciEntry


class _CatalogFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: int
    default: str
    images: list[CatalogEntry]


@dataclass(frozen=True)
class Catalog:
    default: str
    entries: tuple[CatalogEntry, ...]

    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def find(self, name: str) -> CatalogEntry | None:
        return next((e for e in self.entries if e.name == name), None)

    def get(self, name: str) -> CatalogEntry:
        """The entry called `name`, or NotFound that suggests close names."""
        entry = self.find(name)
        if entry is None:
            raise NotFound(unknown_name_message("image", name, self.names()))
        return entry


def unknown_name_message(kind: str, name: str, known: list[str]) -> str:
    close = close_names(name, known)
    if close:
        return f"unknown {kind} {name!r}; did you mean {', '.join(close)}?"
    return f"unknown {kind} {name!r}; `banger {kind} catalog` lists the available ones"


def validate_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise InvalidArgument(
            f"invalid image name {name!r}: use lowercase letters, digits, '.', '_' or '-' "
            "(at most 63, starting with a letter or digit)"
        )
    return name


def _check(cat: _CatalogFile, origin: str) -> Catalog:
    names = [e.name for e in cat.images]
    for entry in cat.images:
        validate_name(entry.name)
        if isinstance(entry, BundleEntry) and not SHA256_RE.fullmatch(entry.sha256):
            raise InvalidArgument(f"{origin}: entry {entry.name!r} has a bad sha256")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InvalidArgument(f"{origin}: duplicate entries {', '.join(dupes)}")
    if cat.default not in names:
        raise InvalidArgument(f"{origin}: default image {cat.default!r} is not in the catalog")
    return Catalog(cat.default, tuple(cat.images))


def parse_catalog(data: bytes, origin: str = "catalog.json") -> Catalog:
    return _check(decode(data, _CatalogFile, origin), origin)


def load_catalog(path: Path | None = None) -> Catalog:
    """The packaged catalog, or the one at `path` (a team's own)."""
    if path is not None:
        return parse_catalog(path.read_bytes(), str(path))
    data = resources.files("banger.images").joinpath("catalog.json").read_bytes()
    return parse_catalog(data)


def lookup(name: str) -> CatalogEntry:
    return load_catalog().get(name)


__all__ = [
    "DEFAULT_KERNEL",
    "BundleEntry",
    "Catalog",
    "CatalogEntry",
    "OciEntry",
    "RecipeEntry",
    "load_catalog",
    "lookup",
    "parse_catalog",
    "unknown_name_message",
    "validate_name",
]
