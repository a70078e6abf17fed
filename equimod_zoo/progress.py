"""One progress bar for every long step: what it does (the model, the split) on the left, then the bar,
the count, the rate and the time, readable at 80 columns (a long description wraps at word
boundaries instead of being cut)."""
from __future__ import annotations

import datetime

from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn
from rich.table import Column
from rich.text import Text


class RateColumn(ProgressColumn):
    """Items per second: `12.3 img/s`."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed or (task.completed / task.elapsed if task.elapsed else None)
        return Text(f"{speed:.1f} {self.unit}/s" if speed else f"- {self.unit}/s", style="progress.data.speed")


class TimeColumn(ProgressColumn):
    """Elapsed and remaining time in one short cell: `0:01:12<0:03:40`."""

    def render(self, task: Task) -> Text:
        elapsed = task.finished_time if task.finished else task.elapsed
        remaining = None if task.finished else task.time_remaining
        left = "-:--:--" if remaining is None else _clock(remaining)
        return Text(f"{_clock(elapsed or 0)}<{left}" if not task.finished else _clock(elapsed or 0),
                    style="progress.elapsed")


def progress_bar(*, enabled: bool = True, unit: str | None = None, status: bool = False,
                 transient: bool = False) -> Progress:
    """A rich `Progress` in the project's one style.

    Args:
        enabled: False gives a bar that shows nothing (a library call with `progress=False`).
        unit: adds a rate column, `N unit/s` (e.g. "img").
        status: shows each task's `status` field after its description (e.g. the training loss).
        transient: remove the bar once done.
    """
    # the status follows the description in its column: both wrap at word boundaries in the room left
    description = "{task.description}  {task.fields[status]}" if status else "{task.description}"
    columns: list[ProgressColumn] = [
        TextColumn(description, markup=False, table_column=Column(ratio=3, overflow="fold")),
        BarColumn(bar_width=None, table_column=Column(ratio=1, min_width=8)),
        MofNCompleteColumn(),
    ]
    if unit is not None:
        columns.append(RateColumn(unit))
    columns.append(TimeColumn())
    return Progress(*columns, expand=True, disable=not enabled, transient=transient)


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(seconds)))
