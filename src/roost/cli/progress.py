"""Progress of a long command, on stderr, for a person watching a terminal.

    with Counting("published") as progress:
        progress.advance(500)         # a spinner, the count, the rate and the time so far

Shown only when stderr is a terminal: piped or redirected, nothing is drawn (stdout keeps
the command's result, stderr its errors). What was done before an interruption is the
command's to say; this only counts.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Self

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn


class Counting:
    """A count of things done (no total), with their rate."""

    def __init__(self, what: str) -> None:
        self.done = 0
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if sys.stderr.isatty():
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn(f"{what} {{task.completed:,.0f}}"),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._task = self._progress.add_task(what, total=None, rate="")

    @property
    def shown(self) -> bool:
        """Drawn on a terminal (else counting is all it does)."""
        return self._progress is not None

    def advance(self, count: int) -> None:
        self.done += count
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, count)
            speed = self._progress.tasks[0].speed
            rate = "" if speed is None else f"{speed:,.0f}/s"
            self._progress.update(self._task, rate=rate)

    def __enter__(self) -> Self:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
