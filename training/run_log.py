"""What a run reports while it trains: RUN/log.csv, TensorBoard under RUN/tb, a rich progress bar.

log.csv is always written, with the core dependencies alone: a plain file anyone can read and
plot. TensorBoard events are written too when tensorboard is installed (`tensorboard=None`), or
always (`True`: a missing tensorboard is one line naming the extra), or never (`False`).

log.csv has one row per logged step (columns step, epoch, lr, loss, then the method's own logs
such as loss_inv, loss_eq, eq_gain, then images_per_s); `step` counts the optimiser steps done.
A resumed run first drops the rows after the step its checkpoint holds (an interrupted attempt
logged them, and they will be logged again), so the file never holds a step twice.
"""
from __future__ import annotations

import csv
import importlib.util
import io
from pathlib import Path
from typing import Any

from rich.progress import Progress

from equimod_zoo.atomic import atomic_write_text, named_writes
from equimod_zoo.constants import LOG_FILE, TENSORBOARD_DIR
from equimod_zoo.optional import require
from equimod_zoo.progress import progress_bar

LEADING_COLUMNS = ("step", "epoch", "lr", "loss")


class RunLog:
    """The CSV log, TensorBoard writer and progress bar of one run (all disabled off rank 0)."""

    def __init__(self, out: str | Path, *, start_step: int, total_steps: int, enabled: bool = True,
                 progress: bool = True, description: str = "training", tensorboard: bool | None = None) -> None:
        self.path = Path(out) / LOG_FILE
        self.enabled = enabled
        self.columns: list[str] | None = None
        self._writer = None
        self._progress: Progress | None = None
        if not enabled:
            return
        self._truncate_after(start_step)
        if tensorboard is None:
            tensorboard = importlib.util.find_spec("tensorboard") is not None
        if tensorboard:
            require("tensorboard", "tensorboard", "training's TensorBoard log (--tensorboard)")
            from torch.utils.tensorboard import SummaryWriter

            # purge_step hides TensorBoard events a previous attempt logged past the checkpoint.
            self._writer = SummaryWriter(str(Path(out) / TENSORBOARD_DIR),
                                         purge_step=start_step + 1 if start_step else None)
        if progress:
            self._progress = progress_bar(status=True)  # readable at 80 columns: wraps, never cut
            self._task = self._progress.add_task(description, total=total_steps, completed=start_step, status="")
            self._progress.start()

    def _truncate_after(self, start_step: int) -> None:
        if not self.path.is_file():
            return
        with open(self.path, newline="") as handle:
            reader = csv.DictReader(handle)
            self.columns = list(reader.fieldnames or [])
            rows = [row for row in reader if int(row["step"]) <= start_step]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path, buffer.getvalue())

    def log(self, row: dict[str, Any]) -> None:
        """Append one row (step, epoch, lr, loss, ...) to log.csv and TensorBoard."""
        if not self.enabled:
            return
        if self.columns is None:
            self.columns = [*LEADING_COLUMNS, *(k for k in row if k not in LEADING_COLUMNS)]
        new_file = not self.path.is_file()
        with named_writes(self.path), open(self.path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow({k: _format(v) for k, v in row.items()})
        if self._writer is None:
            return
        for key, value in row.items():
            if key not in ("step", "epoch") and isinstance(value, (int, float)):
                self._writer.add_scalar(f"train/{key}", value, global_step=int(row["step"]))

    def set_total(self, total_steps: int) -> None:
        """The steps the progress bar counts to (a time budget fits them after the first step)."""
        if self._progress is not None:
            self._progress.update(self._task, total=total_steps)

    def update(self, step: int, *, status: str = "") -> None:
        """Move the progress bar to `step` completed steps."""
        if self._progress is not None:
            self._progress.update(self._task, completed=step, status=status)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None


def read_log(out: str | Path) -> list[dict[str, float]]:
    """log.csv as a list of rows of numbers (empty cells are skipped)."""
    with open(Path(out) / LOG_FILE, newline="") as handle:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]


def _format(value: Any) -> Any:
    # repr-exact floats: a resumed run's losses can be compared bit for bit with the CSV.
    return repr(float(value)) if isinstance(value, float) else value
