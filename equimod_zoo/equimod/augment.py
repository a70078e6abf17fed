"""Batched, parameterised augmentations, and the parameter vector that says what was done to each view.

EquiMod's equivariance module (Devillers & Lefort, ICLR 2023, arXiv:2211.01244) predicts an
augmented view's embedding from the original's and from the augmentation's parameters, so every
view comes with its parameter vector. The full vector, BYOL's pipeline, has 18 entries, in
`PARAM_NAMES` order:

    0-3   crop_top, crop_left, crop_height, crop_width   the crop box in source pixels (i, j, h, w)
    4     flip                                           1 if flipped horizontally after the crop
    5     jitter_applied                                 1 if colour jitter ran (probability jitter_p)
    6-9   jitter_order_0..3                              jitter_order_k = the op applied at position k,
                                                         ops numbered 0 brightness, 1 contrast,
                                                         2 saturation, 3 hue
    10-13 brightness, contrast, saturation, hue          the factors
    14    grayscale                                      1 if converted to grey (3 channels)
    15-16 blur_applied, blur_sigma                       gaussian blur and its sigma
    17    solarize                                       1 if solarized at 128/255

When jitter is not applied its entries are the neutral values: factors 1, 1, 1, 0 and the
identity order 0, 1, 2, 3. When blur is not applied its sigma is 0.

A pipeline's vector holds only the entries of the operations it has (`AugmentConfig.params`):
SimCLR's CIFAR-10 pipeline has no blur and no solarize (entries 0-14, 15 numbers), its ImageNet
pipeline no solarize (0-16, 17 numbers), BYOL's all 18. The recipe states the list; the config
checks it against the pipeline.

On the GPU the augmentations never wait for the device: no data-dependent shapes (`nonzero`,
boolean indexing), no `.item()`, no tensors built from Python lists per call. An operation that
only some samples get (hue, grayscale, blur, solarize) is computed on all of them and blended in
with `torch.where`. On the CPU, where reading a count costs no wait, it runs on those samples
alone, which is cheaper (`BatchedAugment(select_subsets=...)` chooses; both give the same
pixels). An operation the pipeline does not have is never computed.

The semantics are torchvision's (RandomResizedCrop.get_params, resized_crop with bicubic
interpolation, hflip, ColorJitter in a random order with adjust_brightness / adjust_contrast /
adjust_saturation / adjust_hue, rgb_to_grayscale, gaussian_blur with reflect padding,
solarize), but a whole batch goes through each step at once, on whatever device the images
are on: no Python loop over samples.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from equimod_zoo.constants import CIFAR10_MEAN, CIFAR10_STD
from equimod_zoo.dataclass_dict import build_dataclass
from equimod_zoo.errors import UserError

PARAM_NAMES: tuple[str, ...] = (
    "crop_top", "crop_left", "crop_height", "crop_width", "flip",
    "jitter_applied", "jitter_order_0", "jitter_order_1", "jitter_order_2", "jitter_order_3",
    "brightness", "contrast", "saturation", "hue", "grayscale",
    "blur_applied", "blur_sigma", "solarize",
)
NUM_PARAMS = len(PARAM_NAMES)
JITTER_OPS: tuple[str, ...] = ("brightness", "contrast", "saturation", "hue")
# Parameters that are 0/1 flags; the others are continuous or integer-valued.
BINARY_PARAMS: tuple[str, ...] = ("flip", "jitter_applied", "grayscale", "blur_applied", "solarize")

CROP = slice(0, 4)
FLIP = 4
JITTER_APPLIED = 5
JITTER_ORDER = slice(6, 10)
JITTER_FACTORS = slice(10, 14)
GRAYSCALE = 14
BLUR_APPLIED = 15
BLUR_SIGMA = 16
SOLARIZE = 17
# Entries that only exist when the pipeline has the operation.
BLUR_PARAMS: tuple[str, ...] = ("blur_applied", "blur_sigma")
SOLARIZE_PARAMS: tuple[str, ...] = ("solarize",)
# The value of each entry when its operation is not applied: identity crop aside, what `apply` assumes
# for entries a pipeline does not record.
_NEUTRAL = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0)

# ITU-R 601-2 luma, as torchvision's rgb_to_grayscale uses.
_LUMA = (0.2989, 0.587, 0.114)
SOLARIZE_THRESHOLD = 128 / 255


@dataclass(frozen=True)
class ViewConfig:
    """What differs between the two views of the asymmetric pair."""

    blur_p: float
    solarize_p: float


@dataclass(frozen=True)
class AugmentConfig:
    """An augmentation pipeline (defaults: BYOL's CIFAR-10 pair; ../shared/docs/EQUIMOD.md).

    `views` holds what differs between the two views (blur and solarize probabilities); a view
    pair with equal entries draws both views from one distribution, as SimCLR does.
    `params` names the parameter vector's entries, in `PARAM_NAMES` order: the entries of every
    operation the pipeline has (blur only if some view blurs, solarize only if some view
    solarizes). Empty means exactly that list; a recipe states it, and a list that does not match
    the pipeline is refused.
    `x0_resize` makes the un-augmented view Resize(x0_resize) + CenterCrop(size), as on ImageNet
    (256 then 224); None resizes the centre square straight to `size` (CIFAR-10: only normalised).
    `blur_kernel` None means torchvision's 23 px at 224 px, scaled to `size` (odd, at least 3).
    `antialias` False resizes with plain bicubic (torch's `interpolate(mode="bicubic",
    antialias=False)`, a = -0.75); True uses torchvision's antialiased bicubic (a = -0.5, the
    kernel widened when shrinking), as PIL does. It only matters when crops are shrunk.
    """

    size: int = 32
    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel: int | None = None
    views: tuple[ViewConfig, ...] = (ViewConfig(blur_p=1.0, solarize_p=0.0), ViewConfig(blur_p=0.1, solarize_p=0.2))
    mean: tuple[float, float, float] = CIFAR10_MEAN
    std: tuple[float, float, float] = CIFAR10_STD
    antialias: bool = False
    params: tuple[str, ...] = ()
    x0_resize: int | None = None

    def __post_init__(self) -> None:
        if self.size < 1:
            raise UserError(f"size must be positive, got {self.size}")
        if not 0 < self.crop_scale[0] <= self.crop_scale[1]:
            raise UserError(f"crop_scale must be (min, max) with 0 < min <= max, got {self.crop_scale}")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise UserError(f"crop_ratio must be (min, max) with 0 < min <= max, got {self.crop_ratio}")
        if not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise UserError(f"blur_sigma must be (min, max) with 0 < min <= max, got {self.blur_sigma}")
        if self.blur_kernel is not None and (self.blur_kernel < 1 or self.blur_kernel % 2 == 0):
            raise UserError(f"blur_kernel must be a positive odd integer, got {self.blur_kernel}")
        if self.kernel_size // 2 >= self.size:
            raise UserError(f"blur kernel {self.kernel_size} is too large for size {self.size} (reflect padding)")
        if not 0 <= self.hue <= 0.5:
            raise UserError(f"hue must be in [0, 0.5], got {self.hue}")
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be non-negative, got {getattr(self, name)}")
        probabilities = {"flip_p": self.flip_p, "jitter_p": self.jitter_p, "grayscale_p": self.grayscale_p}
        for index, view in enumerate(self.views):
            probabilities[f"views[{index}].blur_p"] = view.blur_p
            probabilities[f"views[{index}].solarize_p"] = view.solarize_p
        for name, p in probabilities.items():
            if not 0 <= p <= 1:
                raise UserError(f"{name} must be a probability in [0, 1], got {p}")
        if not self.views:
            raise UserError("views must name at least one view")
        if self.x0_resize is not None and self.x0_resize < self.size:
            raise UserError(f"x0_resize must be at least size {self.size}, got {self.x0_resize}")
        expected = self.pipeline_params
        if not self.params:
            object.__setattr__(self, "params", expected)
        elif tuple(self.params) != expected:
            raise UserError(f"params must name this pipeline's {len(expected)} entries in order "
                            f"({', '.join(expected)}), got {len(self.params)} ({', '.join(self.params)})")

    @property
    def has_blur(self) -> bool:
        return any(view.blur_p > 0 for view in self.views)

    @property
    def has_solarize(self) -> bool:
        return any(view.solarize_p > 0 for view in self.views)

    @property
    def pipeline_params(self) -> tuple[str, ...]:
        """The entries of the operations this pipeline has, in `PARAM_NAMES` order."""
        left_out = (() if self.has_blur else BLUR_PARAMS) + (() if self.has_solarize else SOLARIZE_PARAMS)
        return tuple(name for name in PARAM_NAMES if name not in left_out)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str) -> AugmentConfig:
        """The pipeline from plain containers (a recipe's `augment` section, as config.json records it)."""
        return build_dataclass(cls, data, source=source, prefix="augment.")

    @property
    def kernel_size(self) -> int:
        """The gaussian blur kernel: `blur_kernel`, or 23 px at 224 px scaled to `size`, odd, >= 3."""
        if self.blur_kernel is not None:
            return self.blur_kernel
        kernel = max(3, round(23 * self.size / 224))
        return kernel if kernel % 2 else kernel + 1


class BatchedAugment:
    """Sample and apply augmentations to a batch of images at once, on the images' device.

    >>> augment = BatchedAugment(AugmentConfig())
    >>> views, params = augment(images_uint8, view=0)    # [n, 3, 32, 32] normalised, [n, len(config.params)]
    >>> x0 = augment.identity(images_uint8)              # the un-augmented view
    """

    def __init__(self, config: AugmentConfig | None = None, *, select_subsets: bool | None = None) -> None:
        """`select_subsets`: run an operation only on the samples that get it (True: cheapest, but the
        sample count is read on the host) or on all and blend (False: no host sync); None: True on
        the CPU only."""
        self.config = config or AugmentConfig()
        self.select_subsets = select_subsets
        self._columns = tuple(PARAM_NAMES.index(name) for name in self.config.params)
        self._constants: dict[tuple[torch.device, torch.dtype], dict[str, torch.Tensor]] = {}

    @property
    def num_params(self) -> int:
        return len(self._columns)

    def prepare(self, device: torch.device | str) -> BatchedAugment:
        """Build the per-device constants now (float32, as the pipeline computes), so that no step
        pays their host-to-device copies; returns self."""
        for name in ("neutral", "columns", "mean", "inverse_std"):
            self._constant(name, torch.device(device))
        return self

    def _constant(self, name: str, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Tensors the pipeline needs on every call, built once per device (a host-to-device copy waits)."""
        cache = self._constants.setdefault((torch.device(device), dtype), {})
        if name not in cache:
            values = {
                "neutral": _NEUTRAL,
                "columns": self._columns,
                "mean": self.config.mean,
                "inverse_std": tuple(1 / v for v in self.config.std),
            }[name]
            cache[name] = torch.tensor(values, device=device,
                                       dtype=torch.long if name == "columns" else dtype)
        return cache[name]

    # ---- sampling -------------------------------------------------------------------------
    def sample(self, n: int, *, view: int, image_size: tuple[int, int], generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> torch.Tensor:
        """Draw `n` parameter vectors ([n, len(config.params)] float32, raw values) for images of `image_size` (H, W).

        Drawn where `generator` lives (else on `device`, else the CPU), then moved to `device`.
        """
        cfg = self.config
        if not 0 <= view < len(cfg.views):
            raise UserError(f"view must be in [0, {len(cfg.views) - 1}], got {view}")
        height, width = int(image_size[0]), int(image_size[1])
        if height < 1 or width < 1:
            raise UserError(f"image_size must be positive, got {tuple(image_size)}")
        view_cfg = cfg.views[view]
        source = generator.device if generator is not None else torch.device(device or "cpu")

        def uniform(*shape: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
            return torch.rand(*shape, generator=generator, device=source).mul_(high - low).add_(low)

        params = torch.empty(n, NUM_PARAMS, device=source)
        params[:, CROP] = _sample_crops(n, height, width, cfg.crop_scale, cfg.crop_ratio, uniform)
        params[:, FLIP] = (uniform(n) < cfg.flip_p).float()

        jitter = uniform(n) < cfg.jitter_p
        order = torch.argsort(uniform(n, 4), dim=1).float()  # a uniform random permutation
        factors = torch.stack([
            uniform(n, low=max(0.0, 1 - cfg.brightness), high=1 + cfg.brightness),
            uniform(n, low=max(0.0, 1 - cfg.contrast), high=1 + cfg.contrast),
            uniform(n, low=max(0.0, 1 - cfg.saturation), high=1 + cfg.saturation),
            uniform(n, low=-cfg.hue, high=cfg.hue),
        ], dim=1)
        neutral = self._constant("neutral", source)
        params[:, JITTER_APPLIED] = jitter.float()
        params[:, JITTER_ORDER] = torch.where(jitter[:, None], order, neutral[JITTER_ORDER])
        params[:, JITTER_FACTORS] = torch.where(jitter[:, None], factors, neutral[JITTER_FACTORS])
        params[:, GRAYSCALE] = (uniform(n) < cfg.grayscale_p).float()

        # Only the operations the pipeline has draw numbers, so a pipeline's random stream does
        # not depend on operations it does not apply.
        params[:, BLUR_APPLIED:].zero_()  # fill_, not `= 0`: a Python scalar becomes a tensor first
        if cfg.has_blur:
            blur = uniform(n) < view_cfg.blur_p
            sigma = uniform(n, low=cfg.blur_sigma[0], high=cfg.blur_sigma[1])
            params[:, BLUR_APPLIED] = blur.float()
            params[:, BLUR_SIGMA] = torch.where(blur, sigma, torch.zeros_like(sigma))
        if cfg.has_solarize:
            params[:, SOLARIZE] = (uniform(n) < view_cfg.solarize_p).float()
        if self.num_params != NUM_PARAMS:
            params = params.index_select(1, self._constant("columns", source))
        return params.to(device) if device is not None else params

    def full_params(self, params: torch.Tensor) -> torch.Tensor:
        """[n, 18] from [n, len(config.params)]: the entries the pipeline does not record at their neutral values."""
        if self.num_params == NUM_PARAMS:
            return params
        full = self._constant("neutral", params.device).expand(params.shape[0], NUM_PARAMS).clone()
        return full.index_copy_(1, self._constant("columns", params.device), params)

    # ---- applying -------------------------------------------------------------------------
    def apply(self, images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Apply `params` ([n, len(config.params)]) to `images` ([n, 3, H, W] uint8, or float in [0, 1]).

        Returns float32 [n, 3, size, size], normalised with the config's mean/std, channels_last.
        """
        x = _as_float_images(images)
        if params.shape != (x.shape[0], self.num_params):
            raise ValueError(f"params must have shape [{x.shape[0]}, {self.num_params}] "
                            f"(this pipeline's entries), got {list(params.shape)}")
        params = self.full_params(params.to(device=x.device, dtype=torch.float32))
        subsets = self.select_subsets if self.select_subsets is not None else x.device.type == "cpu"
        x = resized_crop(x, params[:, CROP], self.config.size, flip=params[:, FLIP] > 0.5,
                         antialias=self.config.antialias).clamp_(0, 1)
        x = color_jitter(x, params[:, JITTER_ORDER], params[:, JITTER_FACTORS], select_subsets=subsets)
        x = apply_where(params[:, GRAYSCALE] > 0.5, lambda xs, _: rgb_to_grayscale(xs).expand_as(xs), x,
                        select_subsets=subsets)
        if self.config.has_blur:
            applied = params[:, BLUR_APPLIED] > 0.5
            # sigma 0 (not blurred) would divide by zero in the kernel; those samples keep x anyway
            sigma = torch.where(applied, params[:, BLUR_SIGMA], torch.ones_like(params[:, BLUR_SIGMA]))
            kernel = self.config.kernel_size
            x = apply_where(applied, lambda xs, rows: gaussian_blur(xs, sigma[rows], kernel), x, select_subsets=subsets)
        if self.config.has_solarize:
            x = apply_where(params[:, SOLARIZE] > 0.5, lambda xs, _: solarize(xs), x, select_subsets=subsets)
        return self.normalize(x)

    def __call__(self, images: torch.Tensor, *, view: int,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample parameters for `images` and apply them: (normalised views, raw params [n, len(config.params)])."""
        _check_images(images)
        params = self.sample(images.shape[0], view=view, image_size=tuple(images.shape[-2:]), generator=generator,
                             device=images.device)
        return self.apply(images, params), params

    def identity(self, images: torch.Tensor) -> torch.Tensor:
        """x0, the un-augmented view, normalised, channels_last.

        Resize(x0_resize) + CenterCrop(size) (default x0_resize = size: the centre square resized),
        up to sub-pixel rounding: the centre crop of the side that resizing would map to `size`.
        """
        x = _as_float_images(images)
        height, width = x.shape[-2:]
        size = self.config.size
        side = min(height, width)
        if self.config.x0_resize is not None:
            side = min(side, round(side * size / self.config.x0_resize))
        top, left = (height - side) // 2, (width - side) // 2
        if side == size:  # a pure centre crop (CIFAR-10 at 32 px; ImageNet stored at 256 px)
            return self.normalize(x[..., top:top + side, left:left + side])
        box = x.new_empty(x.shape[0], 4)
        for column, value in enumerate((top, left, side, side)):
            box[:, column].fill_(value)
        return self.normalize(resized_crop(x, box, size, antialias=self.config.antialias).clamp_(0, 1))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(x - mean) / std, written straight into a channels_last tensor."""
        scale = self._constant("inverse_std", x.device, x.dtype).view(1, 3, 1, 1)
        shift = -self._constant("mean", x.device, x.dtype).view(1, 3, 1, 1) * scale
        out = torch.empty_like(x, memory_format=torch.channels_last)
        return torch.addcmul(shift, x, scale, out=out)


def parameter_statistics(config: AugmentConfig, *, image_size: tuple[int, int], num_samples: int = 100_000,
                         seed: int = 0, min_std: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std ([len(config.params)] each) of the parameters, `num_samples` draws per view, views mixed equally.

    These standardise the parameter vector before EquiMod's parameter head; they are sampled from
    the pipeline in use, so they follow its parameter list. Entries that never vary (blur_applied
    when every view blurs) get std `min_std` instead of 0.
    """
    augment = BatchedAugment(config)
    generator = torch.Generator().manual_seed(seed)
    samples = torch.cat([augment.sample(num_samples, view=view, image_size=image_size, generator=generator)
                         for view in range(len(config.views))]).double()
    return samples.mean(0).float(), samples.std(0).clamp_min(min_std).float()


# ---- the operations, batched with per-sample parameters -----------------------------------------
def _sample_crops(n: int, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
                  uniform) -> torch.Tensor:
    """RandomResizedCrop.get_params for n images at once: 10 tries each, then the centre fallback."""
    tries = 10
    area = height * width
    target_area = area * uniform(n, tries, low=scale[0], high=scale[1])
    aspect = torch.exp(uniform(n, tries, low=math.log(ratio[0]), high=math.log(ratio[1])))
    w = torch.round(torch.sqrt(target_area * aspect))
    h = torch.round(torch.sqrt(target_area / aspect))
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = valid.int().argmax(dim=1, keepdim=True)  # the first try that fits
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)
    top = torch.floor(uniform(n) * (height - h + 1)).clamp_max_(height - h)
    left = torch.floor(uniform(n) * (width - w + 1)).clamp_max_(width - w)

    in_ratio = width / height
    if in_ratio < min(ratio):
        fallback_w, fallback_h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        fallback_w, fallback_h = round(height * max(ratio)), height
    else:
        fallback_w, fallback_h = width, height
    fallback = torch.stack([torch.full_like(w, v) for v in ((height - fallback_h) // 2, (width - fallback_w) // 2,
                                                           fallback_h, fallback_w)], dim=1)
    boxes = torch.stack([top, left, h, w], dim=1)
    return torch.where(valid.any(dim=1, keepdim=True), boxes, fallback)


def _cubic(x: torch.Tensor, a: float) -> torch.Tensor:
    """Keys' cubic convolution kernel with parameter a (torch: -0.75 plain, -0.5 antialiased)."""
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return torch.where(x <= 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def _resize_matrix(start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int, *,
                   antialias: bool) -> torch.Tensor:
    """[n, out_size, in_size] matrices that crop [start, start + length) and resize it to out_size.

    Plain: torch's bicubic with align_corners=False, the 4 taps clamped to the crop (what cropping
    first and then interpolating does). Antialiased: torchvision's antialias=True kernel (a = -0.5,
    support widened by the shrink factor, weights renormalised inside the crop).
    """
    device = start.device
    scale = (length / out_size)[:, None, None]  # source pixels per output pixel
    out = torch.arange(out_size, device=device, dtype=torch.float32)[None, :, None]
    src = torch.arange(in_size, device=device, dtype=torch.float32)[None, None, :] - start[:, None, None]
    inside = (src >= 0) & (src < length[:, None, None])
    if antialias:
        stretch = scale.clamp_min(1.0)  # the kernel widens only when shrinking
        center = scale * (out + 0.5)
        weights = _cubic((src + 0.5 - center) / stretch, -0.5) * inside
        return weights / weights.sum(-1, keepdim=True)
    position = scale * (out + 0.5) - 0.5  # in crop coordinates
    base = torch.floor(position)
    t = position - base
    last = (length - 1)[:, None, None]
    taps = range(-1, 3)
    index = torch.stack([(base + tap).clamp(min=torch.zeros_like(last), max=last) for tap in taps], dim=-1)
    weight = torch.stack([_cubic(t - tap, -0.75) for tap in taps], dim=-1)  # [n, out, 1, 4] each
    # Taps clamped onto the same source pixel share the sum of their weights; a plain scatter_ then
    # writes equal values into shared cells, which keeps it deterministic on GPUs (no atomic adds).
    same = index.unsqueeze(-1) == index.unsqueeze(-2)  # [n, out, 1, 4, 4]
    weight = (weight.unsqueeze(-2) * same).sum(-1)
    matrix = torch.zeros(start.shape[0], out_size, in_size, device=device)
    offset = start[:, None, None, None]
    return matrix.scatter_(2, (index + offset).long().flatten(2), weight.flatten(2))


def resized_crop(images: torch.Tensor, boxes: torch.Tensor, size: int, *, flip: torch.Tensor | None = None,
                 antialias: bool = False) -> torch.Tensor:
    """Crop each image ([n, C, H, W] float) to its box ([n, 4]: top, left, height, width) and resize to size.

    Separable: two batched matrix products, one per axis; `flip` ([n] bool) mirrors the columns.
    """
    n, channels, height, width = images.shape
    boxes = boxes.to(device=images.device, dtype=torch.float32)
    rows = _resize_matrix(boxes[:, 0], boxes[:, 2], height, size, antialias=antialias)
    cols = _resize_matrix(boxes[:, 1], boxes[:, 3], width, size, antialias=antialias)
    if flip is not None:
        cols = torch.where(flip.to(images.device)[:, None, None], cols.flip(1), cols)
    # columns first as one [n, C*H, W] @ [n, W, size] product, then the rows
    narrowed = torch.bmm(images.reshape(n, channels * height, width), cols.transpose(1, 2))
    return torch.matmul(rows[:, None], narrowed.view(n, channels, height, size))


def rgb_to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """[n, 3, H, W] -> [n, 1, H, W] luma (ITU-R 601-2)."""
    r, g, b = x.unbind(dim=1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (x * factor.view(-1, 1, 1, 1)).clamp_(0, 1)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the mean grey level of each image."""
    factor = factor.view(-1, 1, 1, 1)
    mean = rgb_to_grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    return (x * factor + mean * (1 - factor)).clamp_(0, 1)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the grey version of each image."""
    factor = factor.view(-1, 1, 1, 1)
    return (x * factor + rgb_to_grayscale(x) * (1 - factor)).clamp_(0, 1)


def _hue_value_chroma(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """6 x hue in [0, 6) (arbitrary for greys), value (max channel) and chroma (max - min), each [n, 1, H, W]."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    value = x.amax(dim=1, keepdim=True)
    chroma = value - x.amin(dim=1, keepdim=True)
    red_max, green_max = value == r, value == g
    numerator = torch.where(red_max, g - b, torch.where(green_max, b - r, r - g))
    sector = torch.where(red_max, 0.0, torch.where(green_max, 2.0, 4.0))
    hue6 = numerator.div_(torch.where(chroma > 0, chroma, 1.0)).add_(sector)
    return hue6, value, chroma


def _rgb_from_hue(hue6: torch.Tensor, value: torch.Tensor, chroma: torch.Tensor) -> torch.Tensor:
    """RGB from 6 x hue, value and chroma: channel c = v - chroma clamp(min(k, 4 - k), 0, 1), k = (n_c + 6 h) mod 6.

    A grey (chroma 0) comes back as itself whatever its hue.
    """
    offsets = torch.arange(5.0, 0.0, -2.0, device=hue6.device, dtype=hue6.dtype).view(1, 3, 1, 1)  # 5, 3, 1
    k = torch.remainder(hue6 + offsets, 6)
    return torch.minimum(k, 4 - k).clamp_(0, 1).mul_(chroma).neg_().add_(value).clamp_(0, 1)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """[n, 3, H, W] RGB in [0, 1] -> HSV, hue in [0, 1) (0 for greys)."""
    hue6, value, chroma = _hue_value_chroma(x)
    hue = torch.where(chroma > 0, torch.remainder(hue6 / 6, 1.0), 0.0)
    saturation = torch.where(value > 0, chroma / torch.where(value > 0, value, 1.0), 0.0)
    return torch.cat((hue, saturation, value), dim=1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of `rgb_to_hsv`."""
    hue, saturation, value = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return _rgb_from_hue(hue * 6, value, value * saturation)


def adjust_hue(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of each image by its factor (a fraction of the colour wheel, in [-0.5, 0.5])."""
    hue6, value, chroma = _hue_value_chroma(x)
    return _rgb_from_hue(hue6.add_(6 * factor.view(-1, 1, 1, 1)), value, chroma)


def color_jitter(x: torch.Tensor, order: torch.Tensor, factors: torch.Tensor, *,
                 select_subsets: bool = False) -> torch.Tensor:
    """Apply the four jitter ops in each sample's order ([n, 4], op indices) with its factors ([n, 4]).

    At each of the 4 positions every sample runs one op. Brightness, contrast and saturation are
    all `clamp(f x + (1 - f) g)` with g = 0, the mean grey level or the grey image, so one fused
    pass does whichever is due; hue, the expensive one, runs where it is due (`apply_where`).
    """
    order = order.round().long()
    one = torch.ones_like(factors[:, 0])
    zero = torch.zeros_like(one)
    for position in range(4):
        op = order[:, position]
        scale = torch.where(op <= 2, factors.gather(1, op.clamp(max=2)[:, None]).squeeze(1), one)
        contrast = torch.where(op == 1, 1 - scale, zero).view(-1, 1, 1, 1)
        saturation = torch.where(op == 2, 1 - scale, zero).view(-1, 1, 1, 1)
        grey = rgb_to_grayscale(x)
        # shift = (1 - f) * mean grey (contrast) or (1 - f) * grey (saturation), 0 for brightness
        shift = grey.mul(saturation).add_(grey.mean(dim=(2, 3), keepdim=True).mul_(contrast))
        x = torch.addcmul(shift, x, scale.view(-1, 1, 1, 1)).clamp_(0, 1)
        x = apply_where((op == 3) & (factors[:, 3] != 0), lambda xs, rows: adjust_hue(xs, factors[rows, 3]), x,
                        select_subsets=select_subsets)
    return x


def gaussian_kernels(sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """[n, kernel_size] normalised 1-D gaussians, sampled on torchvision's grid."""
    half = (kernel_size - 1) / (2 * math.sqrt(2))
    grid = torch.linspace(-half, half, kernel_size, device=sigma.device, dtype=torch.float32)
    return torch.softmax(-(grid[None, :] / sigma[:, None]) ** 2, dim=1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Blur each image ([n, C, H, W]) with its own sigma ([n]): separable, reflect padding like torchvision."""
    kernels = gaussian_kernels(sigma.to(x.device), kernel_size)[:, :, None, None, None]
    pad = kernel_size // 2
    height, width = x.shape[-2:]
    padded = F.pad(x, (pad, pad, 0, 0), mode="reflect")
    x = padded[..., 0:width] * kernels[:, 0]
    for k in range(1, kernel_size):
        x.addcmul_(padded[..., k:k + width], kernels[:, k])
    padded = F.pad(x, (0, 0, pad, pad), mode="reflect")
    x = padded[..., 0:height, :] * kernels[:, 0]
    for k in range(1, kernel_size):
        x.addcmul_(padded[..., k:k + height, :], kernels[:, k])
    return x


def solarize(x: torch.Tensor, threshold: float = SOLARIZE_THRESHOLD) -> torch.Tensor:
    """Invert the pixels at or above the threshold."""
    return torch.where(x >= threshold, 1 - x, x)


def apply_where(mask: torch.Tensor, op: Callable[[torch.Tensor, Any], torch.Tensor], x: torch.Tensor, *,
                select_subsets: bool) -> torch.Tensor:
    """x with `op` applied to the samples where `mask` ([n] bool) is set; `op(images, rows)` gets the
    images and their rows (an index tensor or a full slice) to pick per-sample arguments.

    `select_subsets` False computes `op` on every sample and blends with `torch.where`: no
    data-dependent shapes, so the host never waits for the GPU. True runs it on the selected
    samples alone (`nonzero` reads their count on the host): less work, the CPU's choice.
    """
    if not select_subsets:
        return torch.where(mask.view(-1, 1, 1, 1), op(x, slice(None)), x)
    due = mask.nonzero().squeeze(1)
    if due.numel() == 0:
        return x
    if due.numel() == x.shape[0]:
        return op(x, slice(None))
    return x.index_copy(0, due, op(x.index_select(0, due), due))


def _check_images(images: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [n, 3, H, W], got {list(images.shape)}")


def _as_float_images(images: torch.Tensor) -> torch.Tensor:
    _check_images(images)
    if images.dtype == torch.uint8:
        return images.float().div_(255)
    if not images.is_floating_point():
        raise TypeError(f"images must be uint8 or float in [0, 1], got {images.dtype}")
    return images.float()
