"""Version, git commit and build time: from _buildinfo.json (written by `make install`) or git."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from banger import __version__

_FILE = Path(__file__).with_name("_buildinfo.json")


@dataclass(frozen=True)
class BuildInfo:
    version: str
    commit: str
    built: str

    def one_line(self) -> str:
        return f"banger v{self.version} (commit {self.commit[:8]}, built {self.built})"


def _from_git() -> str:
    from banger.runner import run

    try:
        res = run(["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"], check=False,
                  timeout=2)
    except Exception:
        return "unknown"
    return res.stdout.strip() if res.ok else "unknown"


def build_info() -> BuildInfo:
    try:
        data = json.loads(_FILE.read_text())
        return BuildInfo(__version__, str(data["commit"]), str(data["built"]))
    except (OSError, ValueError, KeyError):
        built = datetime.fromtimestamp(Path(__file__).stat().st_mtime, UTC)
        return BuildInfo(__version__, _from_git(), built.isoformat(timespec="seconds"))


def write_build_info(commit: str) -> None:
    """Called by `make install`: freeze the commit and time into the package."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    _FILE.write_text(json.dumps({"commit": commit, "built": now}) + "\n")
