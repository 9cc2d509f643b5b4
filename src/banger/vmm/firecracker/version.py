"""Find the firecracker binary and read its version; refuse versions that cannot boot our kernel."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from banger.config import Config
from banger.runner import run, which

MIN_VERSION = (1, 8, 0)
# Debian's kernel has no CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES: it finds virtio-mmio devices only
# through the ACPI tables Firecracker passes since 1.8.0.
TOO_OLD = "older than 1.8.0, whose guests cannot find virtio-mmio devices without ACPI"


@dataclass(frozen=True)
class BinaryProbe:
    path: str | None
    version: tuple[int, int, int] | None
    reason: str  # one line: what was found, or why it cannot be used

    @property
    def usable(self) -> bool:
        return self.path is not None and self.version is not None and self.version >= MIN_VERSION

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version)) if self.version else "unknown version"


def parse_version(text: str) -> tuple[int, int, int] | None:
    """`Firecracker v1.8.0` (first line of `firecracker --version`) -> (1, 8, 0)."""
    m = re.search(r"\bv?(\d+)\.(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def find_binary(configured: str, name: str) -> str | None:
    if configured:
        return configured if Path(configured).is_file() else None
    return which(name)


def probe_binary(config: Config) -> BinaryProbe:
    path = find_binary(config.firecracker_bin, "firecracker")
    if path is None:
        where = f"at {config.firecracker_bin}" if config.firecracker_bin else "on PATH"
        return BinaryProbe(None, None, f"no firecracker binary {where}")
    res = run([path, "--version"], check=False, timeout=10)
    version = parse_version(res.stdout + res.stderr)
    if version is None:
        return BinaryProbe(path, None, f"{path} --version printed no version")
    probe = BinaryProbe(path, version, "")
    if not probe.usable:
        return BinaryProbe(path, version, f"firecracker {probe.version_text} at {path} is "
                           f"{TOO_OLD}")
    return BinaryProbe(path, version, f"firecracker {probe.version_text} at {path}")
