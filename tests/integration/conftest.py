"""Fixtures shared by the integration tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    """A `--root` for `banger system install`: copies of the account files (groupadd/usermod
    --prefix write there), so the host's own /etc is untouched."""
    etc = tmp_path / "etc"
    etc.mkdir()
    for name in ("passwd", "group", "shadow", "gshadow"):
        shutil.copy2(Path("/etc") / name, etc / name)
    yield tmp_path
