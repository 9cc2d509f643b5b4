"""A rich progress display driven by the daemon's progress events."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn


class ProgressView:
    def __init__(self) -> None:
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[message]}"),
            TimeElapsedColumn(),
            transient=False,
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
            self._progress.console.print(str(event.get("message", "")), highlight=False)
            return
        if event.get("type") != "progress":
            return
        stage = str(event.get("stage"))
        fraction = event.get("fraction")
        if stage not in self._tasks:
            if self._current is not None:
                self._progress.update(self._tasks[self._current], completed=1.0)
            self._tasks[stage] = self._progress.add_task(stage, total=1.0, message="")
            self._current = stage
        self._progress.update(
            self._tasks[stage],
            completed=fraction if fraction is not None else None,
            message=event.get("message") or "",
        )
