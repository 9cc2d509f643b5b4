"""Zone files: each user's daemon writes `<uid>.json` (its running VMs' name -> IPv4) into a
shared sticky directory, and bangerd-dns reads them all.

The reader trusts nothing in a file but what the kernel says: the owner uid from fstat names the
user (never the file name or content), and every field is bounded and validated.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import pwd
import re
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from banger.dns.server import is_vm_name
from banger.textsafe import one_line

log = logging.getLogger("banger.dns.zones")
ZONE_DIR = Path("/run/banger/zone")  # made by `sudo banger system install` (root:banger 1775)
ZONE_DIR_ENV = "BANGER_ZONE_DIR"  # another directory (tests)
MAX_FILE = 1024 * 1024
MAX_ENTRIES = 4096  # VMs in one user's file
MAX_FILES = 1024  # users' zone files read (the directory is writable by group banger)
ZONE_NAME = re.compile(r"[0-9]{1,10}\.json")  # `<uid>.json`; writers' temp files start with "."
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class ZoneFile(msgspec.Struct):
    vms: dict[str, str] = {}


def zone_dir() -> Path:
    return Path(os.environ.get(ZONE_DIR_ENV) or ZONE_DIR)


def file_name(uid: int) -> str:
    return f"{uid}.json"


def write_zone(directory: Path, uid: int, vms: dict[str, str]) -> None:
    """Atomically replace `<uid>.json` (temp file + rename in the same directory, mode 0644)."""
    data = msgspec.json.encode(ZoneFile(vms=dict(sorted(vms.items()))))
    fd, tmp = tempfile.mkstemp(prefix=f".{uid}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            os.fchmod(f.fileno(), 0o644)  # bangerd-dns runs as another user
        os.replace(tmp, directory / file_name(uid))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def remove_zone(directory: Path, uid: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        (directory / file_name(uid)).unlink()


def parse_zone(data: bytes) -> dict[str, str]:
    """The valid entries of one file's bytes; ValueError when the file as a whole is unusable."""
    if len(data) > MAX_FILE:
        raise ValueError(f"over {MAX_FILE} bytes")
    try:
        zone = msgspec.json.decode(data, type=ZoneFile)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a zone file ({one_line(str(exc), 120)})") from None
    if len(zone.vms) > MAX_ENTRIES:
        raise ValueError(f"{len(zone.vms)} entries, over {MAX_ENTRIES}")
    good: dict[str, str] = {}
    for name, address in zone.vms.items():
        try:
            ip = ipaddress.IPv4Address(address)
        except ValueError:
            ip = None
        if ip is None or not is_vm_name(name):
            log.info("zone entry %s -> %s ignored: not a VM name and an IPv4 address",
                     one_line(name, 80), one_line(address, 60))
            continue
        good[name] = str(ip)
    return good


def user_label(uid: int) -> str:
    """The user's label in NAME.USER.vm: the account name when it is a valid label, else u<uid>."""
    try:
        name = pwd.getpwuid(uid).pw_name.lower()
    except KeyError:
        return f"u{uid}"
    return name if is_vm_name(name) else f"u{uid}"


def _owned_as_named(dirent: os.DirEntry[str]) -> bool:
    try:
        return dirent.stat(follow_symlinks=False).st_uid == int(dirent.name.split(".")[0])
    except OSError:
        return False  # gone meanwhile


@dataclass
class _Seen:
    """One directory entry as last read: its identity and what it held (None: ignored)."""

    key: tuple[int, int, int, int]  # inode, size, mtime, ctime
    label: str  # the owner's user label
    vms: dict[str, str] | None


@dataclass
class Zones:
    """Every user's zone file under `directory`, re-read when a file's inode, size or times
    change (a rescan at most every `rescan_s` seconds: the directory is on tmpfs)."""

    directory: Path
    rescan_s: float = 0.2
    _seen: dict[str, _Seen] = field(default_factory=dict)
    _scanned: float = float("-inf")
    by_user: dict[str, dict[str, str]] = field(default_factory=dict)

    def refresh(self, now: float) -> None:
        if now - self._scanned < self.rescan_s:
            return
        self._scanned = now
        seen: dict[str, _Seen] = {}
        try:
            dfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            if self._seen or self.by_user:
                log.warning("zone dir %s unreadable: %s", self.directory, exc.strerror)
            self._seen, self.by_user = {}, {}
            return
        try:
            self._scan(dfd, seen)
        finally:
            os.close(dfd)
        self._seen = seen
        self.by_user = self._users(seen)

    def _scan(self, dfd: int, seen: dict[str, _Seen]) -> None:
        """Only `<uid>.json` owned by that uid counts toward MAX_FILES: another group member's
        files (any number, any name) can neither crowd real ones out nor pose as them."""
        counted = 0
        with os.scandir(dfd) as entries:
            for dirent in entries:
                if not ZONE_NAME.fullmatch(dirent.name) or not _owned_as_named(dirent):
                    continue
                if counted >= MAX_FILES:
                    log.warning("zone dir %s: over %d users' files, the rest ignored",
                                self.directory, MAX_FILES)
                    return
                entry = self._read(dfd, dirent.name)
                if entry is not None:
                    seen[dirent.name] = entry
                    counted += 1

    def _read(self, dfd: int, name: str) -> _Seen | None:
        shown = one_line(name, 80)
        try:
            st = os.lstat(name, dir_fd=dfd)
        except OSError:
            return None  # gone meanwhile
        key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        old = self._seen.get(name)
        if old is not None and old.key == key:
            return old
        if not stat.S_ISREG(st.st_mode):
            log.info("zone dir: %s ignored: not a regular file", shown)
            return _Seen(key, "", None)
        try:
            fd = os.open(name, OPEN_FLAGS, dir_fd=dfd)
        except OSError as exc:
            log.info("zone dir: %s ignored: %s", shown, exc.strerror)
            return _Seen(key, "", None)
        with os.fdopen(fd, "rb") as f:
            fst = os.fstat(f.fileno())  # the opened file's owner, not the name's
            key = (fst.st_ino, fst.st_size, fst.st_mtime_ns, fst.st_ctime_ns)
            if not stat.S_ISREG(fst.st_mode) or name != file_name(fst.st_uid):
                log.info("zone dir: %s ignored: not a regular file named after its owner (uid %d)",
                         shown, fst.st_uid)
                return _Seen(key, "", None)
            data = f.read(MAX_FILE + 1)
        try:
            vms = parse_zone(data)
        except ValueError as exc:
            log.info("zone dir: %s ignored: %s", shown, exc)
            return _Seen(key, "", None)
        return _Seen(key, user_label(fst.st_uid), vms)

    @staticmethod
    def _users(seen: dict[str, _Seen]) -> dict[str, dict[str, str]]:
        by_user: dict[str, dict[str, str]] = {}
        taken: set[str] = set()
        for entry in seen.values():
            if entry.vms is None:
                continue
            label = entry.label
            if label in taken:  # two uids, one label (u<uid> or a reused name): neither answers
                by_user.pop(label, None)
                continue
            taken.add(label)
            by_user[label] = entry.vms
        return by_user

    def lookup(self, labels: list[str]) -> str | None:
        """NAME.USER -> that user's VM; NAME -> the VM when exactly one user has that name."""
        if not labels or not is_vm_name(labels[0]):
            return None
        if len(labels) == 2:
            return self.by_user.get(labels[1], {}).get(labels[0])
        if len(labels) != 1:
            return None
        found = [vms[labels[0]] for vms in self.by_user.values() if labels[0] in vms]
        return found[0] if len(found) == 1 else None
