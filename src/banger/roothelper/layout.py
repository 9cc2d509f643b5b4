"""Where `banger system install` writes; a `root` other than / holds it all (packaging, tests)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from banger.net.privileged import HELPER_SOCKET
from banger.roothelper import units


@dataclass(frozen=True)
class Layout:
    """Where install writes; `root` moves it all under one directory."""

    root: Path = Path("/")

    def at(self, path: str | Path) -> Path:
        return self.root / str(path).lstrip("/")

    @property
    def config(self) -> Path:
        return self.at("/etc/banger/root.toml")

    @property
    def record(self) -> Path:
        return self.at("/etc/banger/installed.json")

    @property
    def socket(self) -> Path:
        return self.at(HELPER_SOCKET)

    @property
    def unit_files(self) -> tuple[Path, Path]:
        return (self.at(f"/etc/systemd/system/{units.SOCKET_UNIT}"),
                self.at(f"/etc/systemd/system/{units.SERVICE_UNIT}"))

    def systemd(self) -> bool:
        """The host runs systemd (its own test: sd_booted) and we write to the real root."""
        return self.root == Path("/") and Path("/run/systemd/system").is_dir()

    def prefix_args(self) -> list[str]:
        return [] if self.root == Path("/") else ["--prefix", str(self.root)]
