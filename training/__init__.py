"""Self-supervised pre-training: every base method, alone or with the EquiMod module, on any timm backbone.

    from equimod_zoo.training import train
    result = train("simclr_equimod_r18_cifar10_cpu", data="data/cifar10-jpeg", out="runs/x", max_steps=2)

Names import on first use, so importing the package loads no trainer (nor torch) until one is asked for.
"""
from __future__ import annotations

from equimod_zoo.lazy import lazy_attributes

_LAZY = {
    "train": "equimod_zoo.training.trainer",
    "TrainResult": "equimod_zoo.training.trainer",
    "load_recipe": "equimod_zoo.training.recipe",
    "list_recipes": "equimod_zoo.training.recipe",
    "Recipe": "equimod_zoo.training.recipe",
}
__all__ = [*_LAZY]
__getattr__ = lazy_attributes(__name__, _LAZY)
