"""The per-image PIL pipeline with the same distribution as `BatchedAugment`: the baseline it is measured against.

This is how augmentations are usually written (one PIL image at a time in DataLoader workers,
torchvision.transforms' RandomResizedCrop, RandomHorizontalFlip, ColorJitter, RandomGrayscale,
GaussianBlur and RandomSolarize), instrumented to return the same parameter vector (the entries
the pipeline records, `AugmentConfig.params`).
It is not used for training; bench/train_throughput.py times it as the "reference-style step",
and the tests check that `BatchedAugment.apply` reproduces its output from its parameters.
"""
from __future__ import annotations

import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as F

from equimod_zoo.equimod.augment import (
    BLUR_APPLIED,
    BLUR_SIGMA,
    CROP,
    FLIP,
    GRAYSCALE,
    JITTER_APPLIED,
    JITTER_FACTORS,
    JITTER_ORDER,
    NUM_PARAMS,
    PARAM_NAMES,
    SOLARIZE,
    AugmentConfig,
)
from equimod_zoo.errors import UserError

_JITTER_OPS = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue)


class ReferenceAugment:
    """One view of a pipeline, one PIL image at a time: image -> (normalised [3, size, size], params [len(config.params)]).

    PIL resizes with its antialiased bicubic, so `BatchedAugment` with `antialias=True` is the
    batched twin of this pipeline (up to PIL's rounding to 8 bits after every step).
    """

    def __init__(self, config: AugmentConfig | None = None, *, view: int) -> None:
        self.config = config or AugmentConfig()
        if not 0 <= view < len(self.config.views):
            raise UserError(f"view must be in [0, {len(self.config.views) - 1}], got {view}")
        self.view = self.config.views[view]
        cfg = self.config
        self._jitter_ranges = (
            [max(0.0, 1 - cfg.brightness), 1 + cfg.brightness],
            [max(0.0, 1 - cfg.contrast), 1 + cfg.contrast],
            [max(0.0, 1 - cfg.saturation), 1 + cfg.saturation],
            [-cfg.hue, cfg.hue],
        )
        self._to_tensor = T.Compose([T.ToTensor(), T.Normalize(cfg.mean, cfg.std)])
        self._columns = torch.tensor([PARAM_NAMES.index(name) for name in cfg.params])

    def __call__(self, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        image = image.convert("RGB")
        params = torch.zeros(NUM_PARAMS)

        top, left, height, width = T.RandomResizedCrop.get_params(image, list(cfg.crop_scale), list(cfg.crop_ratio))
        image = F.resized_crop(image, top, left, height, width, [cfg.size, cfg.size],
                               interpolation=T.InterpolationMode.BICUBIC)
        params[CROP] = torch.tensor([top, left, height, width], dtype=torch.float32)
        if _coin(cfg.flip_p):
            image = F.hflip(image)
            params[FLIP] = 1

        params[JITTER_ORDER] = torch.arange(4, dtype=torch.float32)
        params[JITTER_FACTORS] = torch.tensor([1.0, 1.0, 1.0, 0.0])
        if _coin(cfg.jitter_p):
            order, *factors = T.ColorJitter.get_params(*self._jitter_ranges)
            for op in order.tolist():
                image = _JITTER_OPS[op](image, factors[op])
            params[JITTER_APPLIED] = 1
            params[JITTER_ORDER] = order.float()
            params[JITTER_FACTORS] = torch.tensor(factors, dtype=torch.float32)
        if _coin(cfg.grayscale_p):
            image = F.rgb_to_grayscale(image, num_output_channels=3)
            params[GRAYSCALE] = 1
        if cfg.has_blur and _coin(self.view.blur_p):
            sigma = float(torch.empty(1).uniform_(*cfg.blur_sigma))
            image = F.gaussian_blur(image, [cfg.kernel_size, cfg.kernel_size], [sigma, sigma])
            params[BLUR_APPLIED] = 1
            params[BLUR_SIGMA] = sigma
        if cfg.has_solarize and _coin(self.view.solarize_p):
            image = F.solarize(image, 128)
            params[SOLARIZE] = 1
        return self._to_tensor(image), params[self._columns]


def _coin(p: float) -> bool:
    return bool(torch.rand(1) < p)
