"""Read a qcow2 image's backing file name from its header (no qemu-img process per VM)."""

from __future__ import annotations

import struct
from pathlib import Path

MAGIC = b"QFI\xfb"


def backing_file(image: Path) -> Path | None:
    """The backing file recorded in a qcow2 header, or None (no image, not qcow2, no backing)."""
    try:
        with open(image, "rb") as f:
            header = f.read(20)
            if len(header) < 20 or header[:4] != MAGIC:
                return None
            offset, size = struct.unpack(">QI", header[8:20])
            if not offset or not 0 < size <= 1023:
                return None
            f.seek(offset)
            name = f.read(size).decode(errors="replace")
    except OSError:
        return None
    return Path(name) if name.startswith("/") else image.parent / name
