"""Progress of long CLI work (`ledger import`, `ledger ship-file`, `ledger projections rebuild`).

On a terminal: a `rich` bar with counts and rate, drawn on stderr so the command's report on stdout stays
clean for pipes. Otherwise: a plain line now and then (at most one a second, and one at the end), on the
stream given, so logs and CI output show how far the work got.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, TextIO

PLAIN_INTERVAL_SECONDS = 1.0


class Progress(Protocol):
    def advance(self, done: int = 1) -> None: ...

    def update(self, completed: int, total: int | None = None) -> None: ...


class _Plain:
    def __init__(self, label: str, total: int | None, unit: str, out: TextIO) -> None:
        self.label, self.total, self.unit, self.out = label, total, unit, out
        self.completed = 0
        self.started = time.monotonic()
        self.last = 0.0
        self.written = -1

    def advance(self, done: int = 1) -> None:
        self.update(self.completed + done)

    def update(self, completed: int, total: int | None = None) -> None:
        self.completed = completed
        if total is not None:
            self.total = total
        now = time.monotonic()
        if now - self.last >= PLAIN_INTERVAL_SECONDS or self.finished:
            self.last = now
            self.write(now)

    @property
    def finished(self) -> bool:
        return self.total is not None and self.completed >= self.total

    def write(self, now: float) -> None:
        self.written = self.completed
        rate = self.completed / max(now - self.started, 1e-9)
        of = f"/{self.total}" if self.total is not None else ""
        self.out.write(f"{self.label}: {self.completed}{of} {self.unit} ({rate:,.0f} {self.unit}/s)\n")
        self.out.flush()


class _Rich:
    def __init__(self, bar: object, task: object) -> None:
        self.bar, self.task = bar, task

    def advance(self, done: int = 1) -> None:
        self.bar.advance(self.task, done)  # type: ignore[attr-defined]

    def update(self, completed: int, total: int | None = None) -> None:
        if total is not None:
            self.bar.update(self.task, completed=completed, total=total)  # type: ignore[attr-defined]
        else:
            self.bar.update(self.task, completed=completed)  # type: ignore[attr-defined]


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@contextmanager
def progress(
    label: str, total: int | None, *, unit: str, out: TextIO, tty: TextIO | None = None
) -> Iterator[Progress]:
    """A progress reporter: a rich bar on `tty` when it is a terminal, else plain lines on `out`."""
    if tty is not None and is_terminal(tty):
        from rich.console import Console  # noqa: PLC0415 - only terminals need rich
        from rich.progress import (  # noqa: PLC0415
            BarColumn,
            MofNCompleteColumn,
            ProgressColumn,
            Task,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress  # noqa: PLC0415
        from rich.text import Text  # noqa: PLC0415

        class RateColumn(ProgressColumn):
            def render(self, task: Task) -> Text:
                return Text(f"{task.speed or 0:,.0f} {unit}/s")

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            RateColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with RichProgress(*columns, console=Console(file=tty), transient=False) as bar:
            task = bar.add_task(label, total=total)
            yield _Rich(bar, task)
        return
    plain = _Plain(label, total, unit, out)
    yield plain
    if plain.written != plain.completed:
        plain.write(time.monotonic())
