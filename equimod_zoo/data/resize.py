"""Images stored square at a base size, as training keeps them and the augmentation probes sample them."""
from __future__ import annotations

import torch
import torchvision.transforms.v2.functional as TF


def resize_to_base(pixels: torch.Tensor, base_size: int) -> torch.Tensor:
    """Short side to `base_size` (bicubic, antialiased), then a centre crop to a square."""
    height, width = pixels.shape[-2:]
    if (height, width) == (base_size, base_size):
        return pixels
    if min(height, width) != base_size:
        pixels = TF.resize(pixels, [base_size], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    return TF.center_crop(pixels, [base_size, base_size])
