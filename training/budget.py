"""Training to a time budget: `equimod-zoo train --time-budget 9m` fits the run's length to the time it has.

For anyone whose GPU time comes in slices (a SLURM job's limit, a spot instance, a rented hour,
a remote GPU machine with a time limit): the run measures what it needs before it commits to a
length, the first real step, a few more timed steps (undone afterwards) and one dress rehearsal
of the final save (a checkpoint and an exported model folder, written into a staging folder and
thrown away), and fits the steps so that training, its last checkpoint and its exported model
folder are all done inside the budget (`fit_plan`). The warm-up keeps the recipe's share of the
run (the paper's 10 of 800 epochs), and the cosine and BYOL's momentum run over the fitted
length. The plan is recorded in RUN/run.json: rerunning the same command continues it, with no
new measurement, under the new invocation's own budget.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from equimod_zoo.errors import UserError

MAX_BUDGET_SECONDS = 31 * 24 * 3600  # a month: longer is a typo, not a job
SAVE_SHARE = 0.05  # periodic saves (checkpoint + export) may take this share of the training time
SAFETY = 1.5  # the final save is planned at this multiple of its measured time
CALIBRATION_SHARE = 0.25  # a first step slower than this share of the budget is timing enough
CALIBRATION_STEPS = 20  # timed steps (then undone) after the first, which pays one-off costs: at least one,
CALIBRATION_SECONDS = 1.0  # and as many as the first step's time fits in this, up to CALIBRATION_STEPS
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def parse_duration(text: str, *, option: str = "--time-budget") -> float:
    """`9m`, `20h`, `60s`, `1h30m`, `0.5h` in seconds; anything else, or beyond a month, is refused."""
    compact = str(text).strip().lower().replace(" ", "")
    parts = _DURATION.findall(compact)
    if not parts or "".join(value + unit for value, unit in parts) != compact:
        raise UserError(f"{option} {text!r}: expected a duration such as 60s, 9m, 20h or 1h30m")
    seconds = sum(float(value) * _UNITS[unit] for value, unit in parts)
    if not 0 < seconds <= MAX_BUDGET_SECONDS:
        raise UserError(f"{option} {text!r}: must be more than 0 s and at most {MAX_BUDGET_SECONDS // 86400} days")
    return seconds


def format_seconds(seconds: float) -> str:
    """A budget as it was likely typed: 60s, 9m, 1h30m."""
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{v}{u}" for v, u in ((hours, "h"), (minutes, "m"), (secs, "s")) if v) or "0s"


@dataclass(frozen=True)
class Costs:
    """What the run measured: one optimiser step, and one save (a checkpoint and an export)."""

    step_seconds: float
    save_seconds: float


@dataclass(frozen=True)
class Plan:
    """A time-budgeted run's length, fitted once and kept for every later attempt of the same run."""

    total_steps: int
    steps_per_epoch: int
    warmup_steps: int
    checkpoint_every: int  # epochs between saves
    budget_seconds: float  # the budget it was fitted to
    costs: Costs

    @property
    def epochs(self) -> int:
        """Epochs the recipe names: the fitted steps, rounded up to a whole epoch."""
        return math.ceil(self.total_steps / self.steps_per_epoch)

    def recipe_overrides(self) -> dict[str, Any]:
        """The recipe values the plan sets (a warm-up of a fraction of an epoch is fine)."""
        return {"epochs": self.epochs, "optim.warmup_epochs": self.warmup_steps / self.steps_per_epoch,
                "checkpoint_every": self.checkpoint_every}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str) -> Plan:
        try:
            return cls(**{**data, "costs": Costs(**data["costs"])})
        except (TypeError, KeyError) as error:
            raise UserError(f"{source}: not a time budget plan of this equimod-zoo ({error})") from None


def exit_reserve(budget_seconds: float) -> float:
    """Time kept back after the final save for the process to end (and for timing noise)."""
    return min(60.0, 2.0 + 0.01 * budget_seconds)


def final_reserve(costs: Costs, budget_seconds: float) -> float:
    """What the end of a run needs: the final checkpoint and export, with a margin, then the exit."""
    return SAFETY * costs.save_seconds + exit_reserve(budget_seconds)


def fit_plan(*, budget_seconds: float, seconds_left: float, costs: Costs, steps_per_epoch: int,
             warmup_share: float, steps_done: int = 0, max_epochs: int | None = None) -> Plan:
    """The longest run that, saving every few epochs, still ends with its final save inside `seconds_left`.

    `steps_done` steps are behind (the measured first step): the plan counts them. Whole epochs when
    at least one fits (capped by `max_epochs`), else as many steps as fit. Saves come every epoch,
    or every k epochs when a save costs more than SAVE_SHARE of an epoch.
    """
    epoch_seconds = steps_per_epoch * costs.step_seconds
    every = max(1, math.ceil(costs.save_seconds / (SAVE_SHARE * epoch_seconds)))
    available = seconds_left - final_reserve(costs, budget_seconds)
    if available < 0 or steps_done + available / costs.step_seconds < 1:
        raise UserError(f"--time-budget {format_seconds(budget_seconds)}: {max(seconds_left, 0):.0f} s are left after "
                        f"set-up, and a step with the final checkpoint and export needs "
                        f"{costs.step_seconds + final_reserve(costs, budget_seconds):.0f} s; give a longer budget")
    per_step = costs.step_seconds + costs.save_seconds / (every * steps_per_epoch)
    total = steps_done + math.floor(available / per_step)
    if total >= steps_per_epoch:
        total = total // steps_per_epoch * steps_per_epoch
    if max_epochs is not None:
        total = min(total, max_epochs * steps_per_epoch)
    total = max(total, steps_done, 1)
    warmup = min(total, max(1, round(warmup_share * total))) if warmup_share > 0 else 0
    return Plan(total_steps=total, steps_per_epoch=steps_per_epoch, warmup_steps=warmup, checkpoint_every=every,
                budget_seconds=budget_seconds, costs=costs)
