"""A toy training scale shared by the trainer's tests: 8 px images, a 1/8-width ResNet-18 (or a one-block
ConvNeXt or ViT), 16-wide heads."""
from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import PIL.Image

from equimod_zoo.training.recipe import load_recipe

# Milder augmentations and a larger LARS trust coefficient so that a few steps visibly lower the loss.
TINY = {
    "model_args": {"channels": [8, 16, 32, 64], "stem_width": 8},
    "data_size": 8, "eval_size": 8, "augment.size": 8, "augment.crop_scale": [0.5, 1.0],
    "augment.jitter_p": 0.0, "augment.grayscale_p": 0.0,
    "method.proj_hidden": 32, "method.proj_out": 16, "method.eq_hidden": 32, "method.eq_out": 16,
    "method.param_embed": 16, "method.byol_proj_hidden": 32, "method.byol_proj_out": 16,
    "method.byol_pred_hidden": 32, "method.vicreg_proj_hidden": 32, "method.vicreg_proj_out": 16,
    "method.barlow_proj_hidden": 32, "method.barlow_proj_out": 16, "method.mocov3_proj_hidden": 32,
    "method.mocov3_proj_out": 16, "method.mocov3_pred_hidden": 32,
    "batch_size": 16, "epochs": 2, "optim.lr": 4.0, "optim.reference_batch_size": 64, "optim.eta": 0.02,
    "optim.warmup_epochs": 0, "param_stats_samples": 512, "workers": 0, "log_every": 1, "checkpoint_every": 1,
}
METHODS = ("simclr", "simclr_equimod", "byol", "byol_equimod")
# Each family's toy width at 8 px: a ConvNeXt with a 1 px stem (8, 4, 2, 1 px stages), a ViT of 4 patches.
TINY_MODEL_ARGS = {
    "convnext_atto": {"depths": [1, 1, 1, 1], "dims": [8, 16, 16, 32], "patch_size": 1},
    "vit_tiny_patch16_224": {"img_size": 8, "patch_size": 4, "embed_dim": 16, "depth": 1, "num_heads": 2},
}


def tiny_recipe(method: str, **overrides):
    return load_recipe(f"{method}_r18_cifar10", overrides={**TINY, **overrides})


def tiny_recipe_named(name: str, **overrides):
    """Any shipped recipe at the toy scale, its backbone shrunk the way its family allows."""
    recipe = load_recipe(name)
    model_args = TINY_MODEL_ARGS.get(recipe.arch, TINY["model_args"])
    return load_recipe(name, overrides={**TINY, "model_args": model_args, **overrides})


def write_toy_parquet(folder: Path, num_images: int = 64) -> Path:
    """`num_images` blocky 8 px images (random 4x4 colour patterns) as a CIFAR-style train.parquet."""
    patterns = np.random.default_rng(0).integers(0, 256, (num_images, 4, 4, 3), dtype=np.uint8)
    patterns = patterns.repeat(2, 1).repeat(2, 2)
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
    datasets.Dataset.from_dict({"img": [PIL.Image.fromarray(p) for p in patterns], "label": [0] * num_images},
                               features=features).to_parquet(str(folder / "train.parquet"))
    return folder
