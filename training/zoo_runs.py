"""The zoo's training campaigns as data: matched pairs, one budget per pair.

    python -m equimod_zoo.training.zoo_runs cpu --data ../shared/data/cifar10-jpeg --out runs
    python -m equimod_zoo.training.zoo_runs gpu --data ../shared/data/cifar10-jpeg --out runs

A pair shares recipe, seed, epochs, batch and data; only the EquiMod module differs. Rerunning
a campaign resumes each run from its checkpoint.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def run_campaign(name: str, *, data: str | Path, out: str | Path, only: list[str] | None = None,
                 device: str | None = None) -> list[Path]:
    """Train every run of a campaign into out/RUN_NAME, resuming unfinished ones."""
    from equimod_zoo.training.trainer import train

    folders = []
    for run in CAMPAIGNS[name]:
        if only and run.name not in only:
            continue
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
    args = parser.parse_args()
    run_campaign(args.campaign, data=args.data, out=args.out, only=args.only, device=args.device)


if __name__ == "__main__":
    main()
