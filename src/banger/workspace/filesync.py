"""At VM start: copy config file_sync entries into the guest home; the host git identity."""

from __future__ import annotations

import io
import logging
import tarfile
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from banger.agent.client import AgentClient
from banger.config.model import FileSync
from banger.errors import BangerError
from banger.runner import arun

log = logging.getLogger("banger.workspace")
Warn = Callable[[str], None]


def guest_relative(guest: str) -> str:
    """file_sync guest paths start with ~/ or /root/; the tar is extracted in /root."""
    return guest[2:] if guest.startswith("~/") else guest[len("/root/"):]


def _as_root(mode: int | None) -> Callable[[tarfile.TarInfo], tarfile.TarInfo]:
    def fix(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        if mode is not None and info.isfile():
            info.mode = mode
        return info

    return fix


def build_tar(entries: Sequence[FileSync], warn: Warn) -> bytes | None:
    """A tar of the entries that exist on the host, rooted at the guest home."""
    buffer = io.BytesIO()
    added = 0
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT,
                      dereference=True) as tar:
        for entry in entries:
            source = Path(entry.host).expanduser()
            if not source.exists():
                warn(f"file_sync: {entry.host} does not exist on the host; skipped")
                continue
            mode = int(entry.mode, 8) if entry.mode else None
            tar.add(source, arcname=guest_relative(entry.guest), filter=_as_root(mode))
            added += 1
    return buffer.getvalue() if added else None


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def git_identity_setup() -> dict[str, Any]:
    """The host's git user.name/email as agent `configure` arguments (none when unset)."""
    try:
        res = await arun(["git", "config", "--global", "--get-regexp", r"^user\.(name|email)$"],
                         check=False)
    except BangerError:  # no git on the host
        return {}
    identity = {}
    for line in res.stdout.splitlines() if res.ok else []:
        key, _, value = line.partition(" ")
        identity[key.removeprefix("user.")] = value.strip()
    return {"git_identity": identity} if identity else {}


async def sync_home(agent: AgentClient, entries: Sequence[FileSync], warn: Warn) -> None:
    """Best effort: a failure is a warning, never a failed start."""
    try:
        data = build_tar(entries, warn)
        if data is not None:
            await agent.put("/root", _one(data))
    except (BangerError, OSError) as exc:
        message = exc.message if isinstance(exc, BangerError) else str(exc)
        warn(f"file_sync: {message}")
        log.warning("file_sync failed: %s", message)
