"""Augmented views of a dataset's images through a frozen backbone: the probes' raw material.

The views come from the training pipeline's own `BatchedAugment`, configured as the model was
trained when its config.json records a recipe (`equimod.recipe_config`: the augmentation
pipeline with its parameter list, and the size images are stored at before cropping), else
with the default pipeline (BYOL's CIFAR-10 pair, all 18 parameters) at the model's resolution.
Each image gets `augmentations_per_image` views, cycling through the recipe's views (BYOL's
view 1 always blurs and never solarizes, view 2 blurs with p 0.1 and solarizes with p 0.2;
SimCLR's two views are alike), so with the default of 2 every image has one view of each kind
and every parameter of the pipeline varies.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from equimod_zoo.data.images import pixels_at_base
from equimod_zoo.data.sources import ImageSource
from equimod_zoo.errors import UserError
from equimod_zoo.model_folder import ModelConfig
from equimod_zoo.equimod.augment import AugmentConfig, BatchedAugment
from equimod_zoo.limits import check_resolution
from equimod_zoo.progress import progress_bar


@dataclass(frozen=True)
class ProbeAugmentation:
    """The augmentation pipeline of a probe and the square size source images are stored at."""

    augment: BatchedAugment
    source_size: int

    @property
    def resolution(self) -> int:
        return self.augment.config.size


@dataclass
class AugmentedFeatures:
    """Backbone features of N original images (x0) and of M = N x K augmented views (x_t)."""

    original: torch.Tensor  # [N, D]
    view: torch.Tensor  # [M, D]
    params: torch.Tensor  # [M, P] raw parameter vectors (the pipeline's `params`)
    image: torch.Tensor  # [M] the image each view comes from
    view_kind: torch.Tensor  # [M] which view of the recipe (0 or 1)

    def inputs(self, kind: str) -> torch.Tensor:
        """The probe input: "view" = features of x_t alone, "pair" = [features of x0, features of x_t]."""
        if kind == "view":
            return self.view
        if kind == "pair":
            return torch.cat([self.original[self.image], self.view], dim=1)
        raise UserError(f"input kind must be 'view' or 'pair', got {kind!r}")


def probe_augmentation(config: ModelConfig, *, resolution: int | None = None,
                       mean: Sequence[float], std: Sequence[float]) -> ProbeAugmentation:
    """The model's training augmentations (or the default recipe), normalised with `mean`/`std`.

    `resolution` replaces the crop size; the source size keeps the recipe's ratio to it.
    """
    recipe = config.equimod.recipe_config
    if recipe:  # the pipeline the model was trained with, as its export recorded it
        source = f"{config.architecture} config.json equimod.recipe_config"
        augment_config = AugmentConfig.from_dict(recipe.get("augment", {}), source=source)
        source_size = int(recipe.get("data_size", augment_config.size))
    else:
        input_size = config.pretrained_cfg.get("input_size") or (3, 32, 32)
        augment_config = AugmentConfig(size=int(input_size[-1]))
        source_size = augment_config.size
    if resolution is not None:
        if resolution < 1:
            raise UserError(f"resolution must be positive, got {resolution}")
        scale = resolution / augment_config.size
        source_size = max(resolution, round(source_size * scale))
        x0_resize = None if augment_config.x0_resize is None else max(resolution, round(augment_config.x0_resize * scale))
        augment_config = dataclasses.replace(augment_config, size=resolution, x0_resize=x0_resize)
    check_resolution(f"{config.architecture}: the probe's source size (the recorded data_size)", source_size)
    augment_config = dataclasses.replace(augment_config, mean=tuple(float(v) for v in mean),
                                         std=tuple(float(v) for v in std))
    return ProbeAugmentation(BatchedAugment(augment_config), source_size)


def load_images(source: ImageSource, *, num_images: int, size: int, seed: int = 0,
                progress: bool | str = False) -> tuple[torch.Tensor, list[str]]:
    """`num_images` images drawn at random (seeded) from `source`, as uint8 [N, 3, size, size].

    `progress`: show a bar (a string: what the bar says).

    Short side resized to `size` (bicubic, antialiased) then centre-cropped, as training stores
    them. Returns the images and their keys.
    """
    if num_images < 1:
        raise UserError(f"num_images must be positive, got {num_images}")
    if len(source) < num_images:
        raise UserError(f"num_images: the dataset has {len(source)} images, fewer than the {num_images} asked for")
    chosen = torch.randperm(len(source), generator=torch.Generator().manual_seed(seed))[:num_images].sort().values
    images = torch.empty(num_images, 3, size, size, dtype=torch.uint8)
    keys = []
    with progress_bar(enabled=bool(progress), unit="img") as bar:
        task = bar.add_task(progress if isinstance(progress, str) else "decoding images", total=num_images)
        for row, index in enumerate(chosen.tolist()):
            try:
                images[row] = pixels_at_base(lambda index=index: source.open(index), size)
            except Exception as error:  # name the image; a probe set must not silently shrink
                raise UserError(f"{source.key(index)}: cannot be decoded ({error})") from None
            keys.append(source.key(index))
            bar.advance(task)
    return images, keys


@torch.inference_mode()
def augmented_features(backbone: torch.nn.Module, images: torch.Tensor, augmentation: ProbeAugmentation, *,
                       augmentations_per_image: int = 2, views: Sequence[int] | None = None, seed: int = 0,
                       batch_size: int = 256, device: torch.device | str = "cpu",
                       progress: bool | str = False) -> AugmentedFeatures:
    """Features of each image's x0 and of `augmentations_per_image` augmented views (seeded).

    The k-th view of an image uses the recipe's view `views[k % len(views)]` (default: all views).
    """
    augment = augmentation.augment
    views = tuple(range(len(augment.config.views))) if views is None else tuple(views)
    if not views or any(not 0 <= v < len(augment.config.views) for v in views):
        raise UserError(f"views must be indices of the recipe's {len(augment.config.views)} views, got {views}")
    if augmentations_per_image < 1:
        raise UserError(f"augmentations_per_image must be positive, got {augmentations_per_image}")
    backbone = backbone.eval().to(device)
    generator = torch.Generator().manual_seed(seed)
    n = images.shape[0]
    original, view_features, params, image_index, kinds = [], [], [], [], []
    with progress_bar(enabled=bool(progress), unit="img") as bar:
        task = bar.add_task(progress if isinstance(progress, str) else "features of x0 and views",
                            total=n * (augmentations_per_image + 1))
        for start in range(0, n, batch_size):
            batch = images[start:start + batch_size].to(device)
            original.append(_features(backbone, augment.identity(batch)))
            bar.advance(task, len(batch))
            for k in range(augmentations_per_image):
                kind = views[k % len(views)]
                p = augment.sample(len(batch), view=kind, image_size=tuple(batch.shape[-2:]), generator=generator)
                view_features.append(_features(backbone, augment.apply(batch, p)))
                params.append(p)
                image_index.append(torch.arange(start, start + len(batch)))
                kinds.append(torch.full((len(batch),), kind))
                bar.advance(task, len(batch))
    return AugmentedFeatures(original=torch.cat(original), view=torch.cat(view_features), params=torch.cat(params),
                             image=torch.cat(image_index), view_kind=torch.cat(kinds))


def _features(backbone: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    features = backbone(x)
    if features.ndim != 2:
        raise UserError(f"the backbone must return pooled features [n, D] (num_classes=0), got {list(features.shape)}")
    return features.float().cpu()
