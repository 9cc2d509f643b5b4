"""Progress reporting for long operations: stage, fraction (0..1 or None), message."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def __call__(self, stage: str, fraction: float | None = None, message: str = "") -> None: ...


def no_progress(stage: str, fraction: float | None = None, message: str = "") -> None:
    """A Progress that discards everything."""
