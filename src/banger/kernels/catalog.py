"""The kernel catalog shipped with banger: named entries a pull knows how to fetch."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Literal

import msgspec

from banger.catalogs import close_names, decode
from banger.errors import InvalidArgument, NotFound

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class CatalogEntry(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    kind: Literal["debian", "bundle"]
    description: str = ""
    arch: str = "amd64"
    # kind == "debian": the metapackage that names the current ABI package
    suite: str = ""
    component: str = "main"
    metapackage: str = ""
    # kind == "bundle": a .tar.zst with vmlinux and/or bzImage (+ optional initrd)
    url: str = ""
    sha256: str = ""


class Catalog(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    default: str
    kernels: list[CatalogEntry]


def validate_name(name: str) -> str:
    """Kernel names become directory names: keep them to a safe, short alphabet."""
    if not NAME_RE.fullmatch(name):
        raise InvalidArgument(
            f"invalid kernel name {name!r}: use lowercase letters, digits, '.', '_' or '-'"
        )
    return name


def _check_entry(entry: CatalogEntry, origin: str) -> None:
    validate_name(entry.name)
    if entry.kind == "debian" and not (entry.suite and entry.metapackage):
        raise InvalidArgument(f"{origin}: debian kernel {entry.name} needs suite and metapackage")
    if entry.kind == "bundle" and not (entry.url and SHA256_RE.match(entry.sha256)):
        raise InvalidArgument(f"{origin}: bundle kernel {entry.name} needs url and a sha256")


def parse_catalog(data: bytes, origin: str = "kernel catalog") -> Catalog:
    catalog = decode(data, Catalog, origin)
    for entry in catalog.kernels:
        _check_entry(entry, origin)
    if catalog.default not in {e.name for e in catalog.kernels}:
        raise InvalidArgument(f"{origin}: default kernel {catalog.default} has no entry")
    return catalog


def load_catalog(path: Path | None = None) -> Catalog:
    """The packaged catalog (or one from `path`, for tests and custom catalogs)."""
    if path is not None:
        return parse_catalog(path.read_bytes(), str(path))
    data = resources.files("banger.kernels").joinpath("catalog.json").read_bytes()
    return parse_catalog(data)


def suggest(name: str, names: list[str]) -> str:
    """' (did you mean X?)' for a near miss, else ' (known: a, b)'."""
    close = close_names(name, names)
    if close:
        return f" (did you mean {' or '.join(close)}?)"
    return f" (known: {', '.join(sorted(names))})" if names else ""


def lookup(name: str, catalog: Catalog | None = None) -> CatalogEntry:
    """The catalog entry called `name`; NotFound with close names otherwise."""
    catalog = catalog or load_catalog()
    for entry in catalog.kernels:
        if entry.name == name:
            return entry
    names = [e.name for e in catalog.kernels]
    raise NotFound(
        f"no kernel {name!r} in the catalog{suggest(name, names)}; see `banger kernel catalog`"
    )


def default_entry(catalog: Catalog | None = None) -> CatalogEntry:
    catalog = catalog or load_catalog()
    return lookup(catalog.default, catalog)


__all__ = [
    "Catalog",
    "CatalogEntry",
    "default_entry",
    "load_catalog",
    "lookup",
    "parse_catalog",
    "suggest",
    "validate_name",
]
