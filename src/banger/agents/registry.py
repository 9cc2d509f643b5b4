"""The npm registry, as npm is configured: its URL, and a package's packument read strictly.

A packument is a download from the network: it is parsed into bounded msgspec structs, its
size is capped while it arrives, and only http(s) tarball URLs with a sha512 integrity are used.
"""

from __future__ import annotations

import base64
import os
import re
import urllib.parse
from pathlib import Path
from typing import Annotated

import msgspec

from banger.errors import InvalidArgument, NotFound, OperationFailed
from banger.textsafe import one_line

PACKUMENT_MAX = 32 << 20  # codex's has ~700 versions in ~0.5 MiB
CONNECT_TIMEOUT, READ_TIMEOUT = 20.0, 60.0
ABBREVIATED = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8"

Short = Annotated[str, msgspec.Meta(max_length=256)]
Url = Annotated[str, msgspec.Meta(max_length=2048)]


class Dist(msgspec.Struct):
    tarball: Url
    integrity: Annotated[str, msgspec.Meta(max_length=1024)] | None = None


class VersionDoc(msgspec.Struct):
    name: Short
    version: Short
    dist: Dist


class Packument(msgspec.Struct):
    name: Short
    versions: dict[Short, VersionDoc]
    dist_tags: dict[Short, Short] = msgspec.field(name="dist-tags", default_factory=dict)


def _npmrc_value(path: Path, key: str, env: dict[str, str]) -> str | None:
    """`key=value` from an npmrc file (ini lines; `;`/`#` comments; ${VAR} expanded)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    found = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in ";#":
            continue
        k, sep, v = line.partition("=")
        if sep and k.strip() == key:
            found = v.strip().strip('"').strip("'")
    if found is None:
        return None
    return re.sub(r"\$\{([A-Za-z0-9_]+)\}", lambda m: env.get(m.group(1), ""), found)


def _npm_config_get(key: str) -> str | None:
    from banger.runner import run

    try:
        # In /: a project's own .npmrc (a repo you are about to sandbox) must not pick the
        # registry; only your user and global npm config do.
        got = run(["npm", "config", "get", key], check=False, timeout=30, cwd=Path("/"))
    except (OSError, OperationFailed):
        return None
    value = got.stdout.strip()
    return value if got.ok and value and value not in ("undefined", "null") else None


def _keys(package: str) -> list[str]:
    scope = package.split("/", 1)[0] if package.startswith("@") else None
    return [f"{scope}:registry", "registry"] if scope else ["registry"]


def user_registry(package: str, env: dict[str, str] | None = None) -> str | None:
    """The registry from the environment (NPM_CONFIG_REGISTRY) or the user's npmrc, when one
    is set there; cheap (no npm process). Scoped `@scope:registry` wins."""
    env = dict(os.environ) if env is None else env
    lowered = {k.lower(): v for k, v in env.items()}
    home = Path(env.get("HOME") or Path.home())
    userrc = Path(lowered.get("npm_config_userconfig") or home / ".npmrc")
    for key in _keys(package):
        value = lowered.get(f"npm_config_{key}") or _npmrc_value(userrc, key, env)
        if value:
            return checked_registry(value)
    return None


def configured_registry(package: str, env: dict[str, str] | None = None) -> str:
    """The registry npm would fetch `package` from: NPM_CONFIG_REGISTRY, the user's npmrc, then
    npm itself (global npmrc and npm's built-in default)."""
    found = user_registry(package, env)
    if found is not None:
        return found
    for key in _keys(package):
        value = _npm_config_get(key)
        if value:
            return checked_registry(value)
    raise NotFound("no npm registry is configured: install npm, or set NPM_CONFIG_REGISTRY or "
                   "`registry=URL` in ~/.npmrc")


def checked_registry(url: str) -> str:
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidArgument(f"npm registry {one_line(url, 200)!r} is not an http(s) URL")
    return url.strip().rstrip("/") + "/"


def packument_url(registry: str, package: str) -> str:
    return checked_registry(registry) + package.replace("/", "%2F")


async def fetch_packument(registry: str, package: str) -> Packument:
    import httpx  # lazy: ~100 ms to import

    url = packument_url(registry, package)
    body = bytearray()
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
                                     follow_redirects=True,
                                     headers={"Accept": ABBREVIATED}) as client, \
                client.stream("GET", url) as resp:
            if resp.status_code == 404:
                raise NotFound(f"{package} is not on the npm registry {registry}")
            if resp.status_code != 200:
                raise OperationFailed(f"npm registry {registry} answered HTTP {resp.status_code} "
                                      f"for {package}; check the registry and retry")
            async for chunk in resp.aiter_bytes():
                body += chunk
                if len(body) > PACKUMENT_MAX:
                    raise OperationFailed(f"{package}'s packument from {registry} is over "
                                          f"{PACKUMENT_MAX >> 20} MiB; refusing it")
    except httpx.HTTPError as exc:
        raise OperationFailed(f"cannot reach the npm registry {registry} "
                              f"({one_line(str(exc) or type(exc).__name__, 200)}); check the "
                              "network and npm's registry setting") from exc
    try:
        doc = msgspec.json.decode(bytes(body), type=Packument)
    except msgspec.DecodeError as exc:
        raise OperationFailed(f"{package}'s packument from {registry} is malformed "
                              f"({one_line(str(exc), 200)}); refusing it") from exc
    if doc.name != package:
        raise OperationFailed(f"the registry answered for {one_line(doc.name, 80)!r} when asked "
                              f"for {package}; refusing it")
    return doc


def sha512_of(integrity: str | None, what: str) -> bytes:
    """The sha512 digest from an SRI string ('sha512-<base64>', maybe among others)."""
    for token in (integrity or "").split():
        algo, _, b64 = token.partition("-")
        if algo != "sha512":
            continue
        try:
            digest = base64.b64decode(b64.split("?", 1)[0], validate=True)
        except ValueError:
            digest = b""
        if len(digest) == 64:
            return digest
        raise OperationFailed(f"{what}: the registry's sha512 integrity is malformed; refusing it")
    raise OperationFailed(f"{what}: the registry gives no sha512 integrity; refusing to use it "
                          "unverified")


def tarball_url(doc: VersionDoc, what: str) -> str:
    parts = urllib.parse.urlsplit(doc.dist.tarball)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise OperationFailed(f"{what}: tarball URL {one_line(doc.dist.tarball, 200)!r} is not "
                              "http(s); refusing it")
    return doc.dist.tarball


__all__ = ["Dist", "Packument", "VersionDoc", "checked_registry", "configured_registry",
           "fetch_packument", "packument_url", "sha512_of", "tarball_url", "user_registry"]
