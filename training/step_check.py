"""A check of the real training step on the device it will train on, before a run spends its time there.

`check_step` builds the recipe's trainer on a few batches of the data and runs some steps as the run
will (compile off, the recipe's precision: bf16 on a GPU that has it): the losses must be finite,
and on CUDA the steps after the first must make no host-device synchronisation
(`torch.cuda.set_sync_debug_mode("error")` turns one into an error naming the operation). Returns
the seconds a step takes, so that a short GPU run learns in its first minute whether the step works.
"""
from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from equimod_zoo.training.distributed import setup_distributed


@dataclass(frozen=True)
class StepCheck:
    device: str
    autocast: str  # the autocast dtype, or "fp32"
    steps: int
    seconds_per_step: float
    loss: float
    sync_free: bool | None  # None off CUDA, where synchronisations cannot be caught this way

    def summary(self) -> str:
        syncs = {True: "no host sync", False: "host syncs", None: "syncs not checked off CUDA"}[self.sync_free]
        return (f"step check on {self.device}: {self.steps} steps, {self.autocast}, compile off, {syncs}, "
                f"{self.seconds_per_step * 1000:.1f} ms a step, loss {self.loss:.4f}")


def check_step(recipe: str | Path, *, data: str | Path, device: str | None = None, steps: int = 10,
               batch_size: int | None = None, overrides: Mapping[str, Any] | None = None,
               cache_dir: str | Path | None = None, data_limit: int | None = None) -> StepCheck:
    """Run `steps` real training steps of `recipe` (compile off) and check them; raises on a non-finite loss
    or, on CUDA, a host synchronisation inside a step."""
    from equimod_zoo.training.trainer import _Trainer

    info = setup_distributed(device=device)
    settings = {**(overrides or {}), "compile": "off", "log_every": 10**6, "checkpoint_every": 10**6}
    if batch_size is not None:
        settings["batch_size"] = batch_size
    with tempfile.TemporaryDirectory(prefix="equimod-step-check-") as scratch:
        trainer = _Trainer(recipe, info=info, data=data, out=Path(scratch) / "run", max_steps=None, resume=False,
                           overrides=settings, cache_dir=cache_dir, data_limit=data_limit, progress=False)
        batches = trainer.loader.epoch(0)
        images = next(batches)
        trainer.train_step(images)  # builds the augmentations' constants and picks the kernels: not timed
        cuda = trainer.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(trainer.device)
        start = time.perf_counter()
        for _ in range(steps):
            if cuda:
                torch.cuda.set_sync_debug_mode("error")
            try:
                loss, _ = trainer.train_step(images)
            finally:
                if cuda:
                    torch.cuda.set_sync_debug_mode(0)
        if cuda:
            torch.cuda.synchronize(trainer.device)
        seconds = (time.perf_counter() - start) / steps
        value = float(loss)
        if not torch.isfinite(torch.tensor(value)):
            raise FloatingPointError(f"step check: the loss of recipe {trainer.recipe.name} is {value}")
        dtype = trainer.autocast_dtype
        return StepCheck(device=str(trainer.device), autocast=str(dtype).removeprefix("torch.") if dtype else "fp32",
                         steps=steps, seconds_per_step=seconds, loss=value, sync_free=True if cuda else None)
