"""Workspaces: ship a git repo into a VM, get commits and changes back out."""

from __future__ import annotations

from collections.abc import Mapping


def guest_cwd(guest_path: str, subdir: str | None) -> str:
    """Where commands in a workspace start: the shipped subdir of the guest repo."""
    return f"{guest_path}/{subdir or ''}".rstrip("/")


def record_cwd(record: Mapping[str, object] | None) -> str | None:
    """guest_cwd of a VM's workspace record (None without a workspace)."""
    if not record or not isinstance(record.get("guest_path"), str):
        return None
    subdir = record.get("subdir")
    return guest_cwd(str(record["guest_path"]), subdir if isinstance(subdir, str) else None)


__all__ = ["guest_cwd", "record_cwd"]
