"""Member names: split into plain components or refused (absolute, '.', '..', empty, NUL)."""

from __future__ import annotations

from banger.archive.limits import MAX_COMPONENT_BYTES, refuse


def split_name(raw: str, origin: str) -> list[str]:
    """Components of a member name; [] for the archive's root entry ('.', './').

    Only the conventional leading './' (any number) and a directory's trailing '/' are
    forgiven; a '.', '..' or empty component anywhere else is refused.
    """
    if raw.startswith("/"):
        raise refuse(origin, raw, "absolute path, escapes the destination")
    name = raw
    while name.startswith("./"):
        name = name[2:]
    name = name.removesuffix("/")
    if name in ("", "."):
        return []
    parts = name.split("/")
    for part in parts:
        check_component(part, raw, origin)
    return parts


def check_component(part: str, raw: str, origin: str) -> None:
    """One path component: a real name, no NUL, at most NAME_MAX bytes."""
    if part == "..":
        raise refuse(origin, raw, "contains '..', escapes the destination")
    if part in ("", "."):
        raise refuse(origin, raw, "has an empty or '.' path component")
    if "\0" in part:
        raise refuse(origin, raw, "NUL in name")
    try:
        size = len(part.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError as exc:
        raise refuse(origin, raw, "name cannot be encoded") from exc
    if size > MAX_COMPONENT_BYTES:
        raise refuse(origin, raw, f"a component is longer than {MAX_COMPONENT_BYTES} bytes")


__all__ = ["check_component", "split_name"]
