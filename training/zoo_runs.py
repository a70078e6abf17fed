"""The zoo's training campaigns as data: matched pairs, one budget per pair.

    python -m equimod_zoo.training.zoo_runs cpu --data ../shared/data/cifar10-jpeg --out runs
    python -m equimod_zoo.training.zoo_runs gpu --data ../shared/data/cifar10-jpeg --out runs \
        --only simclr_r18_cifar10 simclr_equimod_r18_cifar10 --budget-minutes 7

A pair shares recipe, seed, epochs, batch and data; only the EquiMod module differs. Rerunning
a campaign resumes each run from its checkpoint. With --budget-minutes, a short timed run of each
selected model first sets one epoch count for all of them: the most that fit the budget when they
train one after another (a lease of fixed length, one budget per pair).

The zoo's GPU models were trained this way on one H100, one pair a command: --budget-minutes 6.5
gave the SimCLR pair 41 epochs, 6.3 the BYOL pair 38, and 7.5 byol_equimod_r50_cifar10 28. To
retrain them exactly, pass those counts with --epochs instead of a budget.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from equimod_zoo.atomic import atomic_write_text
from equimod_zoo.training.run_log import LOG_FILE, read_log

CHECKPOINT_FILE = "checkpoint.pt"


@dataclass(frozen=True)
class ZooRun:
    name: str  # the zoo entry it becomes
    recipe: str
    epochs: int
    batch_size: int
    data_limit: int | None = None  # train on the first N images only
    overrides: dict[str, Any] = field(default_factory=dict)


def _pair(base: str, depth_data: str, recipe_suffix: str, **budget: Any) -> tuple[ZooRun, ZooRun]:
    return tuple(ZooRun(f"{m}_{depth_data}", f"{m}_{depth_data}{recipe_suffix}", **budget)
                 for m in (base, f"{base}_equimod"))


# What 2 CPU cores finish in about 80 minutes: 2 epochs over 16,000 CIFAR-10 images, batch 128,
# warm-up shortened in proportion to the paper's (10 of 800 epochs).
_CPU_BUDGET = dict(epochs=2, batch_size=128, data_limit=16_000, overrides={"optim.warmup_epochs": 0.1})
# One H100 lease (30 min, 10 min a command): the paper's batch 512 on the full train split, sized for
# the target of under 10 s a CIFAR-10 epoch; run one pair a command with --only.
_GPU_R18_BUDGET = dict(epochs=30, batch_size=512, overrides={"optim.warmup_epochs": 1})

# The aim of 10 epochs, on the same 16,000 images: about 1.5 h per model at one thread,
# so it spans sessions (a checkpoint every epoch; rerunning the campaign resumes).
_CPU_10EP_BUDGET = dict(epochs=10, batch_size=128, data_limit=16_000, overrides={"optim.warmup_epochs": 0.125})

CAMPAIGNS: dict[str, tuple[ZooRun, ...]] = {
    "cpu": _pair("simclr", "r18_cifar10", "_cpu", **_CPU_BUDGET),
    "cpu-10ep": _pair("simclr", "r18_cifar10", "_cpu", **_CPU_10EP_BUDGET),
    "gpu": (
        *_pair("simclr", "r18_cifar10", "", **_GPU_R18_BUDGET),
        *_pair("byol", "r18_cifar10", "", **_GPU_R18_BUDGET),
        ZooRun("byol_equimod_r50_cifar10", "byol_equimod_r50_cifar10", epochs=10, batch_size=512,
               overrides={"optim.warmup_epochs": 1}),
    ),
}


CALIBRATION_STEPS = 40  # timed optimiser steps per model; the first logged interval (warm-up) is dropped
CALIBRATION_LOG_EVERY = 10


def seconds_per_epoch(run_folder: Path, *, batch_size: int) -> float:
    """One epoch's wall time, from the median throughput of a run's log after its first interval."""
    rows = read_log(run_folder)
    if not rows:
        raise ValueError(f"{run_folder / LOG_FILE}: no logged steps to time")
    timed = rows[1:] or rows
    steps_per_epoch = rows[-1]["step"] / rows[-1]["epoch"]
    return steps_per_epoch * batch_size / statistics.median(row["images_per_s"] for row in timed)


def fit_epochs(runs: list[ZooRun], *, data: str | Path, out: str | Path, budget_s: float,
               device: str | None = None) -> tuple[int, dict[str, float]]:
    """The most epochs that every run completes, one after another, within `budget_s` seconds."""
    from equimod_zoo.training.trainer import train

    timings = {}
    for run in runs:
        folder = Path(out) / ".calibration" / run.name
        shutil.rmtree(folder, ignore_errors=True)
        train(run.recipe, data=data, out=folder, epochs=run.epochs, batch_size=run.batch_size,
              data_limit=run.data_limit, overrides={**run.overrides, "log_every": CALIBRATION_LOG_EVERY},
              max_steps=CALIBRATION_STEPS, device=device, progress=False)
        timings[run.name] = seconds_per_epoch(folder, batch_size=run.batch_size)
    shutil.rmtree(Path(out) / ".calibration", ignore_errors=True)
    return max(1, math.floor(budget_s / sum(timings.values()))), timings


def run_campaign(name: str, *, data: str | Path, out: str | Path, only: list[str] | None = None,
                 device: str | None = None, budget_minutes: float | None = None,
                 epochs: int | None = None) -> list[Path]:
    """Train every run of a campaign into out/RUN_NAME, resuming unfinished ones.

    `epochs` replaces the campaign's epoch count; `budget_minutes` fits one instead (fit_epochs).
    """
    from equimod_zoo.training.trainer import train

    if epochs is not None and budget_minutes is not None:
        raise ValueError("--epochs and --budget-minutes both set the epoch count: give one")
    runs = [run for run in CAMPAIGNS[name] if not only or run.name in only]
    if epochs is not None:
        runs = [replace(run, epochs=epochs) for run in runs]
    if budget_minutes is not None:
        epochs, timings = fit_epochs(runs, data=data, out=out, budget_s=budget_minutes * 60, device=device)
        runs = [replace(run, epochs=epochs) for run in runs]
        record = {"budget_minutes": budget_minutes, "epochs": epochs, "calibrated_seconds_per_epoch": timings}
        print(json.dumps(record))
        atomic_write_text(Path(out) / "budget.json", json.dumps(record, indent=2) + "\n")
    folders = []
    for run in runs:
        folder = Path(out) / run.name
        train(run.recipe, data=data, out=folder, epochs=run.epochs, batch_size=run.batch_size,
              data_limit=run.data_limit, overrides=run.overrides, device=device,
              resume=(folder / CHECKPOINT_FILE).is_file())
        folders.append(folder)
    return folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("campaign", choices=sorted(CAMPAIGNS))
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--only", nargs="*", help="run names to train (default: all of the campaign)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--budget-minutes", type=float, default=None,
                        help="fit one epoch count for the selected runs to this much training time")
    parser.add_argument("--epochs", type=int, default=None, help="train the selected runs for this many epochs")
    args = parser.parse_args()
    run_campaign(args.campaign, data=args.data, out=args.out, only=args.only, device=args.device,
                 budget_minutes=args.budget_minutes, epochs=args.epochs)


if __name__ == "__main__":
    main()
