"""Self-supervised pre-training: SimCLR, BYOL and each with the EquiMod module.

    from equimod_zoo.training import train
    result = train("simclr_equimod_r18_cifar10_cpu", data="data/cifar10-jpeg", out="runs/x", max_steps=2)

Names import on first use: `python -m equimod_zoo.training.campaign` runs its module without this
package loading the trainer first.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "train": "equimod_zoo.training.trainer",
    "TrainResult": "equimod_zoo.training.trainer",
    "load_recipe": "equimod_zoo.training.recipe",
    "list_recipes": "equimod_zoo.training.recipe",
    "Recipe": "equimod_zoo.training.recipe",
}
__all__ = [*_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
