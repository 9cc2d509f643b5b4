"""Which Debian mirror to use: config `debian_mirror`, else the host's apt sources. Never hard-coded."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from banger.errors import NotFound

APT_SOURCES = Path("/etc/apt")


@dataclass(frozen=True)
class Mirror:
    url: str  # base URL, no trailing slash, e.g. <scheme>://<host>/debian
    source: str  # where it came from, for doctor and error messages
    allow_unsigned: bool = False  # config debian_allow_unsigned: Release signatures not required


def _deb822_uris(text: str) -> list[tuple[str, str]]:
    uris: list[tuple[str, str]] = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            uris.append((uri, fields.get("suites", "")))
    return uris


def _one_line_uris(text: str) -> list[tuple[str, str]]:
    uris: list[tuple[str, str]] = []
    for line in text.splitlines():
        parts = re.sub(r"\[[^]]*\]", "", line).split()
        if len(parts) >= 3 and parts[0] == "deb":
            uris.append((parts[1], parts[2]))
    return uris


def _is_main_archive(uri: str, suites: str) -> bool:
    return "security" not in uri and "security" not in suites and "ports" not in uri


def mirror_from_apt(root: Path = APT_SOURCES) -> Mirror | None:
    files = sorted((root / "sources.list.d").glob("*.sources")) if root.exists() else []
    for f in files:
        for uri, suites in _deb822_uris(f.read_text(errors="replace")):
            if _is_main_archive(uri, suites):
                return Mirror(uri.rstrip("/"), str(f))
    lists = [root / "sources.list", *sorted((root / "sources.list.d").glob("*.list"))]
    for f in lists:
        if f.exists():
            for uri, suite in _one_line_uris(f.read_text(errors="replace")):
                if _is_main_archive(uri, suite):
                    return Mirror(uri.rstrip("/"), str(f))
    return None


def resolve_mirror(configured: str, *, allow_unsigned: bool = False,
                   apt_root: Path = APT_SOURCES) -> Mirror:
    """The mirror to fetch Debian packages from, where that choice came from, and its trust."""
    if configured:
        return Mirror(configured.rstrip("/"), "config debian_mirror", allow_unsigned)
    found = mirror_from_apt(apt_root)
    if found is None:
        raise NotFound(
            "no Debian mirror configured and none found in /etc/apt sources; "
            "set debian_mirror in config.toml"
        )
    return replace(found, allow_unsigned=allow_unsigned)
