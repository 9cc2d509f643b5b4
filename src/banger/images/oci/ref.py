"""OCI/Docker references: parse, normalise, and derive banger image names and cache tags."""

from __future__ import annotations

import re
from dataclasses import dataclass

from banger.errors import InvalidArgument

DEFAULT_DOMAIN = "docker.io"
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
PATH_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
DOMAIN_RE = re.compile(r"^(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?$")


@dataclass(frozen=True)
class OciRef:
    domain: str
    path: str  # repository path, e.g. library/debian
    tag: str | None
    digest: str | None

    @property
    def transport(self) -> str:
        """What skopeo reads: `docker://domain/path[:tag][@digest]`."""
        return f"docker://{self.canonical}"

    @property
    def canonical(self) -> str:
        out = f"{self.domain}/{self.path}"
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    @property
    def registry(self) -> str:
        return self.domain

    def default_name(self) -> str:
        """`docker.io/library/debian:bookworm` -> `debian-bookworm`; digests use 12 hex digits."""
        base = self.path.rsplit("/", 1)[-1]
        suffix = self.tag or (self.digest.split(":", 1)[1][:12] if self.digest else "latest")
        name = re.sub(r"[^a-z0-9._-]+", "-", f"{base}-{suffix}".lower()).strip("-._")
        return name[:63].rstrip("-._") or "oci-image"

    def cache_tag(self) -> str:
        """The ref name inside the cache's OCI layout (skopeo's `oci:DIR:TAG`)."""
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.canonical)[:200]


def _split_domain(rest: str) -> tuple[str, str]:
    first, sep, remainder = rest.partition("/")
    if sep and (("." in first) or (":" in first) or first == "localhost" or first.startswith("[")):
        return first, remainder
    return DEFAULT_DOMAIN, rest


def parse_ref(text: str) -> OciRef:
    """Parse `[docker://][domain/]path[:tag][@sha256:hex]`; InvalidArgument says what is wrong."""
    raw = text.strip()
    ref = raw.removeprefix("docker://")
    if not ref or any(c.isspace() for c in ref):
        raise InvalidArgument(f"{text!r} is not an image reference such as debian:bookworm")
    ref, _, digest = ref.partition("@")
    if digest and not DIGEST_RE.fullmatch(digest):
        raise InvalidArgument(f"{text!r}: digest must be sha256: followed by 64 lowercase hex digits")
    domain, rest = _split_domain(ref)
    path, tag = rest, None
    if ":" in rest.rsplit("/", 1)[-1]:
        path, _, tag = rest.rpartition(":")
        if not TAG_RE.fullmatch(tag):
            raise InvalidArgument(f"{text!r}: tag {tag!r} is not a valid tag")
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = f"library/{path}"
    if not PATH_RE.fullmatch(path) or not DOMAIN_RE.fullmatch(domain):
        raise InvalidArgument(f"{text!r} is not an image reference such as debian:bookworm "
                              "or registry:5000/team/image:tag")
    if not tag and not digest:
        tag = "latest"
    return OciRef(domain, path, tag, digest or None)


def looks_like_oci_ref(source: str, catalog_names: list[str]) -> bool:
    """A pull source that is an OCI ref: has ':', '/' or a digest; not a catalog name/path/URL."""
    if source in catalog_names or source.startswith(("/", "./", "../", "~")):
        return False
    if re.match(r"^(https?|file)://", source) or source.endswith(".tar.zst"):
        return False
    return ":" in source or "/" in source or "@sha256:" in source


__all__ = ["OciRef", "looks_like_oci_ref", "parse_ref"]
