"""Files `system install` writes outside its own /etc/banger: each recorded with its sha256, so
uninstall removes only what is still exactly as written (an admin's edit is kept and named)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import msgspec


class Written(msgspec.Struct, forbid_unknown_fields=True):
    path: str
    sha256: str
    role: str  # "dns-unit", "tmpfiles" or "resolver"
    made_dir: str = ""  # a parent directory install created for it (removed when left empty)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _current(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def write(files: list[Written], path: Path, text: str, role: str) -> str:
    """Write `path` unless someone else's file is there; updates `files`; says what happened."""
    data = text.encode()
    old = _current(path)
    mine = next((w for w in files if w.path == str(path)), None)
    if old is not None and digest(old) == digest(data):
        if mine is None:  # the same content from an earlier install whose record was lost
            files.append(Written(str(path), digest(data), role))
        return f"kept {path}"
    if old is not None and (mine is None or digest(old) != mine.sha256):
        return (f"left {path} alone: it is not the one banger wrote; banger's would be:\n"
                + text.rstrip("\n"))
    made_dir = ""
    if not path.parent.is_dir():
        path.parent.mkdir(mode=0o755, parents=True)
        made_dir = str(path.parent)
    path.write_bytes(data)
    path.chmod(0o644)
    if mine is not None:
        files.remove(mine)
        made_dir = mine.made_dir
    files.append(Written(str(path), digest(data), role, made_dir))
    return f"wrote {path}"


def remove_unchanged(files: list[Written]) -> list[str]:
    """Delete each file still as written; a changed one is kept and named."""
    said = []
    for w in files:
        path = Path(w.path)
        data = _current(path)
        if data is None:
            continue
        if digest(data) != w.sha256:
            said.append(f"kept {path}: changed since `banger system install` wrote it; remove "
                        "it yourself if banger's part is no longer wanted")
            continue
        path.unlink()
        said.append(f"removed {path}")
        if w.made_dir and Path(w.made_dir).is_dir() and not any(Path(w.made_dir).iterdir()):
            Path(w.made_dir).rmdir()
    return said
