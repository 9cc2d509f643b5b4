"""Debian archive access: Release (signature-checked), Packages index, verified .deb downloads.

Chain of trust: gpgv checks Release against the Debian archive keyring (when installed),
Release pins Packages.xz by sha256, and Packages pins every .deb by sha256.
"""

from __future__ import annotations

import hashlib
import logging
import lzma
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from banger.debian.deb import parse_control
from banger.debian.mirror import Mirror
from banger.download import download, sha256_file
from banger.errors import NotFound, OperationFailed
from banger.paths import Paths
from banger.progress import Progress
from banger.runner import arun, which

log = logging.getLogger("banger.debian")

DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
# Release changes with point releases; re-check it after this long, reuse it before.
RELEASE_MAX_AGE = 6 * 3600


@dataclass(frozen=True)
class VerifyStatus:
    possible: bool
    reason: str  # one line for doctor: why verification is (not) possible


def release_verification(keyring: Path | None = None) -> VerifyStatus:
    """Whether Release signatures can be checked here (for `banger doctor`)."""
    keyring = keyring or DEBIAN_KEYRING
    if not keyring.exists():
        return VerifyStatus(False, f"{keyring} missing; install debian-archive-keyring")
    if which("gpgv") is None:
        return VerifyStatus(False, "gpgv not installed; install gpgv")
    return VerifyStatus(True, f"gpgv with {keyring}")


@dataclass(frozen=True)
class Stanza:
    package: str
    version: str
    filename: str
    sha256: str
    size: int
    depends: str = ""
    fields: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def depends_names(self) -> list[str]:
        """Package names in Depends (first alternative of each, version constraints dropped)."""
        names: list[str] = []
        for item in self.depends.split(","):
            first = item.split("|")[0].strip()
            name = re.split(r"[\s(:]", first, maxsplit=1)[0]
            if name:
                names.append(name)
        return names


def parse_release(text: str) -> dict[str, tuple[str, int]]:
    """SHA256 section of a Release file: path -> (sha256, size)."""
    entries: dict[str, tuple[str, int]] = {}
    in_sha = False
    for line in text.splitlines():
        if not line[:1].isspace():
            in_sha = line.strip() == "SHA256:"
            continue
        parts = line.split()
        if in_sha and len(parts) == 3 and parts[1].isdigit():
            entries[parts[2]] = (parts[0].lower(), int(parts[1]))
    return entries


def _stanza(fields: dict[str, str]) -> Stanza | None:
    try:
        return Stanza(
            package=fields["Package"],
            version=fields["Version"],
            filename=fields["Filename"],
            sha256=fields["SHA256"].lower(),
            size=int(fields["Size"]),
            depends=fields.get("Depends", ""),
            fields=fields,
        )
    except (KeyError, ValueError):
        return None


def parse_packages(text: str) -> dict[str, Stanza]:
    """Packages index -> name -> stanza (the highest-listed duplicate loses to the last)."""
    out: dict[str, Stanza] = {}
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        stanza = _stanza(parse_control(block))
        if stanza is not None:
            out[stanza.package] = stanza
    return out


def _cache_key(mirror: Mirror, suite: str) -> str:
    digest = hashlib.sha256(mirror.url.encode()).hexdigest()[:12]
    return f"{re.sub(r'[^A-Za-z0-9._-]', '_', suite)}-{digest}"


class DebianArchive:
    """One suite of one mirror, with indices cached under cache_dir/debian/<suite>-<mirror hash>."""

    def __init__(
        self,
        mirror: Mirror,
        suite: str,
        paths: Paths,
        *,
        component: str = "main",
        arch: str = "amd64",
        keyring: Path | None = None,
    ) -> None:
        self.mirror = mirror
        self.suite = suite
        self.component = component
        self.arch = arch
        self.keyring = keyring or DEBIAN_KEYRING
        self.cache = paths.cache_dir / "debian" / _cache_key(mirror, suite)
        self.debs = paths.cache_dir / "debian" / "debs"
        self._release: dict[str, tuple[str, int]] | None = None
        self._packages: dict[str, Stanza] | None = None

    def url(self, path: str) -> str:
        return f"{self.mirror.url}/{path}"

    def _dists(self, name: str) -> str:
        return self.url(f"dists/{self.suite}/{name}")

    async def release(self, progress: Progress | None = None) -> dict[str, tuple[str, int]]:
        """The Release file's SHA256 entries, fetched (and signature-checked) when stale."""
        if self._release is None:
            path = self.cache / "Release"
            fresh = path.exists() and time.time() - path.stat().st_mtime < RELEASE_MAX_AGE
            if not fresh:
                await self._fetch_release(progress)
            text = path.read_text(errors="replace")
            self._check_suite(text)
            self._release = parse_release(text)
        return self._release

    async def _fetch_release(self, progress: Progress | None) -> None:
        if progress:
            progress("index", None, f"fetching Release for {self.suite} from {self.mirror.url}")
        tmp = self.cache / "Release.new"
        try:
            await download(self._dists("Release"), tmp)
        except OperationFailed as exc:
            if not (self.cache / "Release").exists():
                raise
            # offline or mirror hiccup: the older, already verified Release still pins hashes
            log.warning("using cached Release for %s: %s", self.suite, exc)
            return
        try:
            if release_verification(self.keyring).possible:
                await download(self._dists("Release.gpg"), self.cache / "Release.gpg")
                await self._verify(tmp, self.cache / "Release.gpg")
            else:
                log.warning("not verifying %s: %s", self._dists("Release"),
                            release_verification(self.keyring).reason)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(self.cache / "Release")

    async def _verify(self, release: Path, signature: Path) -> None:
        result = await arun(["gpgv", "--keyring", self.keyring, signature, release], check=False)
        if not result.ok:
            raise OperationFailed(
                f"signature check of {self._dists('Release')} failed; the mirror "
                f"({self.mirror.source}) may be tampered with or stale: "
                f"{result.stderr.strip().splitlines()[-1] if result.stderr.strip() else 'gpgv'}"
            )

    def _check_suite(self, text: str) -> None:
        head = parse_control(text.split("\n\n")[0])
        names = {head.get("Codename", ""), head.get("Suite", "")}
        if self.suite not in names:
            (self.cache / "Release").unlink(missing_ok=True)
            raise OperationFailed(
                f"{self._dists('Release')} is for {sorted(names)}, not {self.suite}; "
                "check the mirror URL"
            )

    async def packages(self, progress: Progress | None = None) -> dict[str, Stanza]:
        """The component's Packages index, verified against Release and cached by hash."""
        if self._packages is None:
            rel = f"{self.component}/binary-{self.arch}/Packages.xz"
            entries = await self.release(progress)
            if rel not in entries:
                raise OperationFailed(f"{self._dists('Release')} lists no {rel}; check the suite")
            sha, size = entries[rel]
            path = self.cache / f"Packages-{sha[:16]}.xz"
            if not _cached(path, sha, size):
                self._drop_old_indices()
                await download(self._dists(rel), path, sha256=sha, size=size, progress=progress)
            if progress:
                progress("index", None, f"reading {rel}")
            self._packages = parse_packages(_unxz(path))
        return self._packages

    def _drop_old_indices(self) -> None:
        for old in self.cache.glob("Packages-*.xz"):
            old.unlink(missing_ok=True)

    async def lookup(self, name: str, progress: Progress | None = None) -> Stanza:
        """The stanza of a package by exact name."""
        index = await self.packages(progress)
        if name not in index:
            raise NotFound(
                f"package {name} is not in {self.suite}/{self.component} on {self.mirror.url}"
            )
        return index[name]

    async def fetch_deb(self, stanza: Stanza, progress: Progress | None = None) -> Path:
        """Download a .deb (or reuse the cached one whose sha256 matches); return its path."""
        dest = self.debs / Path(stanza.filename).name
        if _cached(dest, stanza.sha256, stanza.size):
            return dest
        await download(
            self.url(stanza.filename), dest, sha256=stanza.sha256, size=stanza.size,
            progress=progress,
        )
        return dest


def _cached(path: Path, sha256: str, size: int) -> bool:
    return path.exists() and path.stat().st_size == size and sha256_file(path) == sha256


def _unxz(path: Path) -> str:
    try:
        return lzma.decompress(path.read_bytes()).decode("utf-8", "replace")
    except lzma.LZMAError as exc:
        path.unlink(missing_ok=True)
        raise OperationFailed(f"{path} is corrupt ({exc}); retry to re-download it") from exc


__all__ = [
    "DEBIAN_KEYRING",
    "DebianArchive",
    "Stanza",
    "VerifyStatus",
    "parse_packages",
    "parse_release",
    "release_verification",
]
