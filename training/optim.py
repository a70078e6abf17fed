"""The optimiser and learning-rate schedule of the SimCLR / BYOL / EquiMod recipes.

LARS (timm's `Lars`) with momentum 0.9, trust coefficient 1e-3 and weight decay 1e-6; the peak
learning rate scales linearly with the batch size; a linear warm-up, then a cosine decay to 0.
BatchNorm parameters and biases (every parameter with at most one dimension) get neither weight
decay nor the LARS trust ratio: they sit in their own group with weight_decay=0 and
always_adapt=False, which timm's Lars reads per group as "plain SGD with momentum".

Nothing here waits for the device: the learning rate of every step is computed once into a
device tensor (`lr_schedule`), the optimiser reads its rate from one 0-dim device tensor that the
step overwrites in place, and the optimisers run their `foreach` path, which takes a tensor rate
(timm's per-tensor path would turn it into a Python number with a sync every step).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from timm.optim import Lars

from equimod_zoo.errors import UserError

OPTIMIZERS = ("lars", "sgd")


@dataclass(frozen=True)
class OptimConfig:
    """The optimiser recipe. `lr` is the base rate for `reference_batch_size` images per step."""

    lr: float
    reference_batch_size: int
    weight_decay: float = 1e-6
    momentum: float = 0.9
    eta: float = 1e-3  # LARS trust coefficient
    warmup_epochs: float = 10  # fractional for short schedules
    optimizer: str = "lars"
    trust_clip: bool = False  # LARS: clip the trust ratio at 1 (solo-learn's `clip_lr`)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"unknown optimizer {self.optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")
        if self.lr <= 0:
            raise UserError(f"lr must be positive, got {self.lr}")
        if self.reference_batch_size <= 0:
            raise UserError(f"reference_batch_size must be positive, got {self.reference_batch_size}")
        if self.weight_decay < 0 or self.momentum < 0 or self.eta <= 0 or self.warmup_epochs < 0:
            raise UserError("weight_decay, momentum and warmup_epochs must be >= 0 and eta > 0")

    def peak_lr(self, batch_size: int) -> float:
        """The linearly scaled peak rate: lr * batch_size / reference_batch_size (global batch)."""
        if batch_size <= 0:
            raise UserError(f"batch_size must be positive, got {batch_size}")
        return self.lr * batch_size / self.reference_batch_size


def parameter_groups(model: nn.Module, *, weight_decay: float) -> list[dict]:
    """Two groups: weights (decayed, LARS-adapted) and BN parameters + biases (neither)."""
    decayed, excluded = [], []
    for param in model.parameters():
        if param.requires_grad:
            (excluded if param.ndim <= 1 else decayed).append(param)
    return [
        {"params": decayed, "weight_decay": weight_decay, "always_adapt": True},
        {"params": excluded, "weight_decay": 0.0, "always_adapt": False},
    ]


def build_optimizer(model: nn.Module, config: OptimConfig, *, batch_size: int) -> torch.optim.Optimizer:
    """The recipe's optimiser over `model`'s trainable parameters, at the peak learning rate.

    `batch_size` is the global batch (all ranks). A schedule then sets each group's "lr" per step
    (see `lr_at` and `set_lr`).
    """
    lr = config.peak_lr(batch_size)
    groups = parameter_groups(model, weight_decay=config.weight_decay)
    if config.optimizer == "lars":
        return Lars(groups, lr=lr, momentum=config.momentum, trust_coeff=config.eta, trust_clip=config.trust_clip,
                    foreach=True)
    for group in groups:
        group.pop("always_adapt")
    return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, foreach=True)


def lr_at(step: int, *, total_steps: int, warmup_steps: int, peak_lr: float) -> float:
    """Linear warm-up from 0 to `peak_lr` over `warmup_steps`, then a cosine decay to 0 at `total_steps`."""
    if total_steps <= 0:
        raise UserError(f"total_steps must be positive, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise UserError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")
    step = min(max(step, 0), total_steps)
    if step < warmup_steps:
        return peak_lr * step / warmup_steps
    decay_steps = total_steps - warmup_steps
    if decay_steps == 0:
        return peak_lr
    progress = (step - warmup_steps) / decay_steps
    return peak_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_schedule(*, total_steps: int, warmup_steps: int, peak_lr: float,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """`lr_at` for steps 0..total_steps, as one float32 tensor on `device` (built once per run)."""
    values = [lr_at(step, total_steps=total_steps, warmup_steps=warmup_steps, peak_lr=peak_lr)
              for step in range(total_steps + 1)]
    return torch.tensor(values, dtype=torch.float32, device=device)


def set_lr(optimizer: torch.optim.Optimizer, lr: float | torch.Tensor) -> None:
    """Set every parameter group's learning rate (both groups follow the same schedule).

    A 0-dim tensor is shared by the groups: writing the next rate into it (`lr.copy_(...)`) then
    updates the optimiser without a host round trip, and a compiled step sees the same object.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
