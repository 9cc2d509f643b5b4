"""A rich progress display driven by the daemon's progress events.

Stages and messages may carry guest or image text: they are cleaned and never read as markup.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from banger.textsafe import one_line

if TYPE_CHECKING:
    from rich.console import Console


class ProgressView:
    def __init__(self, console: Console | None = None) -> None:
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            TextColumn("{task.fields[message]}", markup=False),
            TimeElapsedColumn(),
            transient=False,
            console=console,
        )
        self._tasks: dict[str, TaskID] = {}
        self._current: str | None = None

    def __enter__(self) -> ProgressView:
        self._progress.__enter__()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._current is not None and et is None:
            self._progress.update(self._tasks[self._current], completed=1.0)
        self._progress.__exit__(et, ev, tb)

    def update(self, event: dict[str, Any]) -> None:
        if event.get("type") == "info":
            self._progress.console.print(one_line(str(event.get("message", ""))), markup=False,
                                         highlight=False, emoji=False)
            return
        if event.get("type") != "progress":
            return
        stage = one_line(str(event.get("stage")), 60)
        fraction = event.get("fraction")
        if stage not in self._tasks:
            if self._current is not None:
                self._progress.update(self._tasks[self._current], completed=1.0)
            self._tasks[stage] = self._progress.add_task(stage, total=1.0, message="")
            self._current = stage
        self._progress.update(
            self._tasks[stage],
            completed=fraction if isinstance(fraction, (int, float)) else None,
            message=one_line(str(event.get("message") or "")),
        )
