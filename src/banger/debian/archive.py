"""Debian archive access: Release (signature-checked), Packages index, verified .deb downloads.

Chain of trust: gpgv checks Release against the Debian archive keyring (required unless the
config opts out with debian_allow_unsigned), Release must not be past its Valid-Until, Release
pins Packages.xz by sha256, and Packages pins every .deb by sha256.
"""

from __future__ import annotations

import hashlib
import logging
import lzma
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from banger import textsafe
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


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_RELEASE_DATE = re.compile(
    rf"(?:({'|'.join(_DAYS)}), )?([0-9]{{1,2}}) ({'|'.join(_MONTHS)}) ([0-9]{{4}}) "
    r"([0-9]{2}):([0-9]{2}):([0-9]{2}) (?:UTC|GMT|\+0000)"
)


def parse_release_date(text: str) -> datetime:
    """A Release date ('Sat, 01 Jan 2000 00:00:00 UTC'), strictly: UTC only, real day and weekday."""
    match = _RELEASE_DATE.fullmatch(text)
    bad = OperationFailed(f"unparseable date {textsafe.one_line(text, 60)!r}; "
                          "expected a UTC date such as 'Sat, 01 Jan 2000 00:00:00 UTC'")
    if match is None:
        raise bad
    weekday, day, month, year, hour, minute, second = match.groups()
    try:
        when = datetime(int(year), _MONTHS.index(month) + 1, int(day), int(hour), int(minute),
                        int(second), tzinfo=UTC)
    except ValueError:
        raise bad from None
    if weekday is not None and _DAYS[when.weekday()] != weekday:
        raise bad
    return when


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
        """The Release file's SHA256 entries, fetched and checked again when stale."""
        if self._release is None:
            text = await self._recent_cached_release()
            if text is None:
                text = await self._fetch_release(progress)
            self._release = parse_release(text)
        return self._release

    async def _recent_cached_release(self) -> str | None:
        """The cached Release when it is recent and still passes every check, else None."""
        path = self.cache / "Release"
        if not path.exists() or time.time() - path.stat().st_mtime >= RELEASE_MAX_AGE:
            return None
        try:
            return await self._checked_text(path, self.cache / "Release.gpg")
        except OperationFailed as exc:
            log.info("not reusing the cached Release for %s: %s", self.suite, exc.message)
            return None

    async def _fetch_release(self, progress: Progress | None) -> str:
        if progress:
            progress("index", None, f"fetching Release for {self.suite} from {self.mirror.url}")
        self._require_verification()
        new, new_sig = self.cache / "Release.new", self.cache / "Release.gpg.new"
        try:
            await download(self._dists("Release"), new)
            if not self.mirror.allow_unsigned:
                await download(self._dists("Release.gpg"), new_sig)
        except OperationFailed as exc:
            if not (self.cache / "Release").exists():
                raise
            # offline or mirror hiccup: the older Release still pins hashes once it passes the checks
            log.warning("using cached Release for %s: %s", self.suite, exc)
            return await self._checked_text(self.cache / "Release", self.cache / "Release.gpg")
        try:
            text = await self._checked_text(new, new_sig)
            self._check_not_older(text)
        except BaseException:
            new.unlink(missing_ok=True)
            new_sig.unlink(missing_ok=True)
            raise
        if new_sig.exists():
            new_sig.replace(self.cache / "Release.gpg")
        new.replace(self.cache / "Release")
        return text

    async def _checked_text(self, release: Path, signature: Path) -> str:
        """Release's text once its signature, suite and Valid-Until pass; OperationFailed if not."""
        if not self.mirror.allow_unsigned:
            self._require_verification()
            await self._verify(release, signature)
        text = release.read_text(errors="replace")
        head = parse_control(text.split("\n\n")[0])
        self._check_suite(head)
        self._check_valid_until(head)
        return text

    def _require_verification(self) -> None:
        """Fail closed: without gpgv and the keyring, nothing vouches for what the mirror sent."""
        status = release_verification(self.keyring)
        if not status.possible and not self.mirror.allow_unsigned:
            raise OperationFailed(
                f"cannot check the signature of {self._dists('Release')}: {status.reason}; "
                "or set debian_allow_unsigned = true in config.toml (unsafe: anyone on the path "
                "to the mirror could hand over the kernel)"
            )

    async def _verify(self, release: Path, signature: Path) -> None:
        result = await arun(["gpgv", "--keyring", self.keyring, signature, release], check=False)
        if not result.ok:
            lines = result.stderr.strip().splitlines()
            raise OperationFailed(
                f"signature check of {self._dists('Release')} failed; the mirror "
                f"({self.mirror.source}) may be tampered with or stale: "
                f"{textsafe.one_line(lines[-1], 200) if lines else 'gpgv'}"
            )

    def _check_suite(self, head: dict[str, str]) -> None:
        names = {head.get("Codename", ""), head.get("Suite", "")}
        if self.suite not in names:
            shown = sorted(textsafe.one_line(n, 60) for n in names)
            raise OperationFailed(
                f"{self._dists('Release')} is for {shown}, not {self.suite}; check the mirror URL"
            )

    def _check_not_older(self, text: str) -> None:
        """A signed Release older than one already seen is a replay (apt refuses it too);
        Debian's main archive has no Valid-Until, so this is what stops an old one there."""
        try:
            seen = parse_control((self.cache / "Release").read_text(errors="replace")
                                 .split("\n\n")[0]).get("Date")
        except OSError:
            return
        new = parse_control(text.split("\n\n")[0]).get("Date")
        if not seen or not new:
            return
        try:
            seen_at, new_at = parse_release_date(seen), parse_release_date(new)
        except OperationFailed:
            return  # the cached one predates strict parsing; the new one passed its checks
        if new_at < seen_at:
            raise OperationFailed(
                f"{self._dists('Release')} is dated {new_at:%Y-%m-%d %H:%M} UTC, older than the "
                f"one already seen ({seen_at:%Y-%m-%d %H:%M} UTC): the mirror "
                f"({self.mirror.source}) is stale or replaying an old Release; use an up-to-date "
                "mirror (debian_mirror in config.toml) or retry later"
            )

    def _check_valid_until(self, head: dict[str, str]) -> None:
        """A correctly signed but old Release (a replay) is refused once it is past Valid-Until."""
        if "Valid-Until" not in head:
            return  # Debian's main archive sets none; its security archive does
        try:
            until = parse_release_date(head["Valid-Until"])
        except OperationFailed as exc:
            raise OperationFailed(f"{self._dists('Release')}: Valid-Until: {exc.message}; "
                                  "check the mirror (debian_mirror in config.toml)") from None
        if until < datetime.now(UTC):
            raise OperationFailed(
                f"{self._dists('Release')} expired on {until:%Y-%m-%d %H:%M:%S} UTC (Valid-Until): "
                f"the mirror ({self.mirror.source}) is stale or replaying an old Release; use an "
                "up-to-date mirror (debian_mirror in config.toml) or retry later"
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
    "parse_release_date",
    "release_verification",
]
