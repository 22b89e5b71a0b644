"""Progress of the walks on a terminal: pages, images, images/s and, when the last
walk's size is known, an ETA. Quiet (``NullProgress``) when not a terminal."""

from __future__ import annotations

from types import TracebackType
from typing import IO, Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class WalkProgress(Protocol):
    def start(self, scope: str, expected: int | None) -> None: ...
    def advance(self, scope: str, images: int) -> None: ...
    def finish(self, scope: str, status: str) -> None: ...


class NullProgress:
    def start(self, scope: str, expected: int | None) -> None:
        pass

    def advance(self, scope: str, images: int) -> None:
        pass

    def finish(self, scope: str, status: str) -> None:
        pass


class TerminalProgress:
    """A rich progress display, one line per scope (use as a context manager)."""

    def __init__(self, stream: IO[str]) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("images · {task.fields[pages]} pages · {task.fields[rate]}/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(file=stream),
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}
        self._pages: dict[str, int] = {}

    def __enter__(self) -> TerminalProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def start(self, scope: str, expected: int | None) -> None:
        if scope in self._tasks:
            self._progress.reset(self._tasks[scope], total=expected)
        else:
            self._tasks[scope] = self._progress.add_task(scope, total=expected, pages=0, rate="-")
        self._pages[scope] = 0

    def advance(self, scope: str, images: int) -> None:
        task_id = self._tasks[scope]
        self._pages[scope] += 1
        self._progress.advance(task_id, images)
        task = self._progress.tasks[task_id]
        speed = task.speed
        rate = f"{speed:,.0f}" if speed else "-"
        if task.total is not None and task.completed > task.total:
            self._progress.update(task_id, total=None)  # the scope grew: no ETA
        self._progress.update(task_id, pages=self._pages[scope], rate=rate)

    def finish(self, scope: str, status: str) -> None:
        task_id = self._tasks[scope]
        task = self._progress.tasks[task_id]
        self._progress.update(task_id, total=task.completed, description=f"{scope} [{status}]")


def progress_for(stream: IO[str]) -> TerminalProgress | None:
    """A terminal progress display when ``stream`` is a terminal, else None."""
    return TerminalProgress(stream) if stream.isatty() else None
