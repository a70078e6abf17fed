"""The batched augmentations: the 18 parameters describe exactly what was applied (torchvision's semantics)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

from equimod_zoo.equimod.augment import (
    PARAM_NAMES,
    AugmentConfig,
    BatchedAugment,
    ViewConfig,
    parameter_statistics,
)
from equimod_zoo.training.augment_reference import ReferenceAugment

# mean 0 / std 1 turns the output normalisation off, so outputs compare with torchvision's in [0, 1]
RAW = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
IDX = {name: index for index, name in enumerate(PARAM_NAMES)}
TOL = 2e-5



def _images(n: int, height: int = 32, width: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, height, width), dtype=torch.uint8, generator=generator)


def _neutral(n: int, height: int = 32, width: int = 32) -> torch.Tensor:
    """Parameters that only resize the whole image: everything else off."""
    params = torch.zeros(n, len(PARAM_NAMES))
    params[:, IDX["crop_height"]] = height
    params[:, IDX["crop_width"]] = width
    params[:, IDX["jitter_order_0"]:IDX["jitter_order_3"] + 1] = torch.arange(4.0)
    params[:, IDX["brightness"]:IDX["saturation"] + 1] = 1.0
    return params


def _crop_reference(images: torch.Tensor, params: torch.Tensor, size: int, *, antialias: bool = False) -> torch.Tensor:
    out = []
    for image, p in zip(images.float() / 255, params):
        top, left, height, width = (int(v) for v in p[:4])
        view = TF.resized_crop(image, top, left, height, width, [size, size], interpolation=InterpolationMode.BICUBIC,
                               antialias=antialias).clamp(0, 1)
        out.append(TF.horizontal_flip(view) if p[IDX["flip"]] > 0.5 else view)
    return torch.stack(out)


def test_param_names_are_the_contract():
    assert PARAM_NAMES == (
        "crop_top", "crop_left", "crop_height", "crop_width", "flip", "jitter_applied", "jitter_order_0",
        "jitter_order_1", "jitter_order_2", "jitter_order_3", "brightness", "contrast", "saturation", "hue",
        "grayscale", "blur_applied", "blur_sigma", "solarize",
    )


@pytest.mark.parametrize("height,width", [(32, 32), (40, 28)])
def test_crop_box_and_flip_reproduce_torchvision(height, width):
    augment = BatchedAugment(AugmentConfig(**RAW))
    images = _images(48, height, width)
    params = _neutral(48)
    sampled = augment.sample(48, view=0, image_size=(height, width), generator=torch.Generator().manual_seed(1))
    params[:, :5] = sampled[:, :5]
    assert 0 < params[:, IDX["flip"]].sum() < 48
    out = augment.apply(images, params)
    assert torch.allclose(out, _crop_reference(images, params, 32), atol=TOL)


def test_antialiased_shrinking_crop_matches_torchvision():
    augment = BatchedAugment(AugmentConfig(size=16, antialias=True, **RAW))
    images = _images(16, 64, 48)
    params = _neutral(16)
    params[:, :5] = augment.sample(16, view=0, image_size=(64, 48), generator=torch.Generator().manual_seed(2))[:, :5]
    out = augment.apply(images, params)
    assert torch.allclose(out, _crop_reference(images, params, 16, antialias=True), atol=TOL)


def test_neutral_jitter_factors_are_the_identity():
    augment = BatchedAugment(AugmentConfig(**RAW))
    images = _images(16)
    plain = augment.apply(images, _neutral(16))
    assert torch.allclose(plain, images.float() / 255, atol=1e-6)  # a full-image box at 32 px is the image
    params = _neutral(16)
    params[:, IDX["jitter_applied"]] = 1
    params[:, IDX["jitter_order_0"]:IDX["jitter_order_3"] + 1] = torch.stack([torch.randperm(4) for _ in range(16)]).float()
    assert torch.allclose(augment.apply(images, params), plain, atol=1e-5)


@pytest.mark.parametrize("op", ["brightness", "contrast", "saturation", "hue"])
def test_each_jitter_op_matches_torchvision(op):
    augment = BatchedAugment(AugmentConfig(**RAW))
    images = _images(24, seed=3)
    params = _neutral(24)
    params[:, IDX["jitter_applied"]] = 1
    generator = torch.Generator().manual_seed(4)
    factors = (torch.rand(24, generator=generator) - 0.5) * 0.9 if op == "hue" else torch.rand(24, generator=generator) * 1.5 + 0.25
    params[:, IDX[op]] = factors
    reference = torch.stack([getattr(TF, f"adjust_{op}")(image, float(f)) for image, f in zip(images.float() / 255, factors)])
    assert torch.allclose(augment.apply(images, params), reference, atol=TOL)


def test_jitter_runs_in_the_stored_order():
    augment = BatchedAugment(AugmentConfig(**RAW))
    images = _images(32, seed=5)
    params = augment.sample(32, view=0, image_size=(32, 32), generator=torch.Generator().manual_seed(6))
    params[:, IDX["jitter_applied"]] = 1
    params[:, IDX["jitter_order_0"]:IDX["jitter_order_3"] + 1] = torch.stack([torch.randperm(4) for _ in range(32)]).float()
    params[:, IDX["brightness"]:IDX["hue"] + 1] = torch.tensor([1.4, 0.6, 1.2, 0.1])  # strong, order-sensitive
    params[:, IDX["grayscale"]:] = 0
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    reference = []
    for image, p in zip(_crop_reference(images, params, 32), params):
        for op in p[IDX["jitter_order_0"]:IDX["jitter_order_3"] + 1].long().tolist():
            image = ops[op](image, float(p[IDX["brightness"] + op]))
        reference.append(image)
    out = augment.apply(images, params)
    assert torch.allclose(out, torch.stack(reference), atol=TOL)
    # and the order matters: the same factors in the identity order give something else
    params[:, IDX["jitter_order_0"]:IDX["jitter_order_3"] + 1] = torch.arange(4.0)
    assert (augment.apply(images, params) - out).abs().amax() > 0.05


def test_grayscale_blur_and_solarize_match_torchvision():
    config = AugmentConfig(blur_kernel=5, **RAW)
    augment = BatchedAugment(config)
    images = _images(12, seed=7)
    x = images.float() / 255
    sigma = torch.linspace(0.1, 2.0, 12)

    params = _neutral(12)
    params[::2, IDX["grayscale"]] = 1
    expected = torch.stack([TF.rgb_to_grayscale(image, 3) if g else image for image, g in zip(x, params[:, IDX["grayscale"]])])
    assert torch.allclose(augment.apply(images, params), expected, atol=TOL)

    params = _neutral(12)
    params[1::3, IDX["blur_applied"]] = 1
    params[:, IDX["blur_sigma"]] = sigma * params[:, IDX["blur_applied"]]
    expected = torch.stack([TF.gaussian_blur(image, [5, 5], [float(s)] * 2) if b else image
                            for image, s, b in zip(x, sigma, params[:, IDX["blur_applied"]])])
    assert torch.allclose(augment.apply(images, params), expected, atol=TOL)

    params = _neutral(12)
    params[2::3, IDX["solarize"]] = 1
    expected = torch.stack([TF.solarize(image, 128 / 255) if s else image for image, s in zip(x, params[:, IDX["solarize"]])])
    assert torch.allclose(augment.apply(images, params), expected, atol=TOL)


def test_default_blur_kernel_scales_with_size():
    assert AugmentConfig(size=224).kernel_size == 23
    assert AugmentConfig(size=32).kernel_size == 3
    assert AugmentConfig(size=96).kernel_size % 2 == 1


def test_sampled_parameters_respect_the_recipe():
    config = AugmentConfig()
    augment = BatchedAugment(config)
    n = 20_000
    generator = torch.Generator().manual_seed(8)
    first = augment.sample(n, view=0, image_size=(32, 32), generator=generator)
    second = augment.sample(n, view=1, image_size=(32, 32), generator=generator)
    for params in (first, second):
        top, left, height, width = params[:, :4].T
        assert (top >= 0).all() and (left >= 0).all() and (top + height <= 32).all() and (left + width <= 32).all()
        assert (params[:, :4] == params[:, :4].round()).all()
        area = height * width / 32**2
        assert area.min() >= 0.15 and area.max() <= 1.0
        jitter = params[:, IDX["jitter_applied"]] > 0.5
        order = params[:, IDX["jitter_order_0"]:IDX["jitter_order_3"] + 1]
        assert (order.sort(dim=1).values == torch.arange(4.0)).all()  # always a permutation
        # not applied: the documented neutral values
        assert (order[~jitter] == torch.arange(4.0)).all()
        assert (params[~jitter, IDX["brightness"]:IDX["hue"] + 1] == torch.tensor([1.0, 1.0, 1.0, 0.0])).all()
        factors = params[jitter, IDX["brightness"]:IDX["hue"] + 1]
        assert factors[:, 0].min() >= 0.6 and factors[:, 0].max() <= 1.4
        assert factors[:, 1].min() >= 0.6 and factors[:, 1].max() <= 1.4
        assert factors[:, 2].min() >= 0.8 and factors[:, 2].max() <= 1.2
        assert factors[:, 3].abs().max() <= 0.1
        blur = params[:, IDX["blur_applied"]] > 0.5
        assert (params[~blur, IDX["blur_sigma"]] == 0).all()
        assert params[blur, IDX["blur_sigma"]].min() >= 0.1 and params[blur, IDX["blur_sigma"]].max() <= 2.0
        for name, p in [("flip", 0.5), ("jitter_applied", 0.8), ("grayscale", 0.2)]:
            assert abs(params[:, IDX[name]].mean().item() - p) < 0.02, name
    # the asymmetric pair: view 1 always blurs and never solarizes; view 2 blurs at 0.1, solarizes at 0.2
    assert (first[:, IDX["blur_applied"]] == 1).all() and (first[:, IDX["solarize"]] == 0).all()
    assert abs(second[:, IDX["blur_applied"]].mean().item() - 0.1) < 0.015
    assert abs(second[:, IDX["solarize"]].mean().item() - 0.2) < 0.02


def test_crop_fallback_is_torchvisions_centre_crop():
    # no box of the scale/ratio range fits a 2 x 100 image: torchvision falls back to a centre crop
    params = BatchedAugment().sample(8, view=0, image_size=(2, 100))
    expected = RandomResizedCrop.get_params(torch.zeros(3, 2, 100), [0.2, 1.0], [3 / 4, 4 / 3])
    assert (params[:, :4] == torch.tensor(expected, dtype=torch.float32)).all()


def test_parameter_statistics_against_the_reference_cifar10_ones():
    mean, std = parameter_statistics(AugmentConfig(), image_size=(32, 32), num_samples=50_000)
    # EQUIMOD.md's reference CIFAR-10 statistics (the authors' pipeline)
    ref_mean = torch.tensor([4.3122, 4.3216, 23.369, 23.374, 0.49998, 0.80087, 1.2025, 1.4007, 1.5964, 1.8004, 0.99993,
                             1.0002, 0.99986, 2.2321e-07, 0.19965, 0.27256, 0.52507, 0.050149])
    ref_std = torch.tensor([3.9740, 3.9851, 4.9544, 4.9539, 0.5000, 0.3993, 1.1651, 1.0210, 1.0200, 1.1669, 0.2066, 0.2068,
                            0.2066, 0.0517, 0.3997, 0.30381, 0.65251, 0.064719])
    same = [IDX[name] for name in PARAM_NAMES[:12] + ("hue", "grayscale")]
    assert torch.allclose(mean[same], ref_mean[same], rtol=0.02, atol=0.002)
    same_std = [i for i in same if i != IDX["saturation"]]
    assert torch.allclose(std[same_std], ref_std[same_std], rtol=0.02)
    # Entries that differ by definition, not by error:
    # - saturation: the reference std (0.2066, as brightness's) is that of factors in [0.6, 1.4], i.e. a
    #   saturation strength of 0.4 (SimCLR's jitter); the BYOL recipe we follow uses 0.2.
    assert abs(std[IDX["saturation"]].item() - 0.4 / 12**0.5 * 0.8**0.5) < 0.003  # U(0.8, 1.2) 80% of the time
    _, sat_04_std = parameter_statistics(AugmentConfig(saturation=0.4), image_size=(32, 32), num_samples=50_000)
    assert abs(sat_04_std[IDX["saturation"]].item() - ref_std[IDX["saturation"]].item()) < 0.003
    # - blur and solarize: the reference numbers are not those of 0/1 flags (a flag with mean 0.05 has std 0.22,
    #   not 0.065), and its sigma statistics are those of blur at p = 0.5. Ours are the recipe's: the views mixed
    #   equally, blur at (1.0 + 0.1) / 2, solarize at (0 + 0.2) / 2, sigma ~ U(0.1, 2.0) when blurred.
    assert abs(mean[IDX["blur_applied"]].item() - 0.55) < 0.01
    assert abs(mean[IDX["solarize"]].item() - 0.1) < 0.005
    assert abs(mean[IDX["blur_sigma"]].item() - 0.55 * 1.05) < 0.01
    assert (std > 0).all()


def test_statistics_clamp_constant_entries_away_from_zero():
    config = AugmentConfig(jitter_p=0.0, views=(ViewConfig(blur_p=1.0, solarize_p=0.0),))
    _, std = parameter_statistics(config, image_size=(32, 32), num_samples=1000)
    assert "solarize" not in config.params and std.shape == (17,)  # no view solarizes: no entry for it
    constant = [config.params.index(name) for name in ("blur_applied", "jitter_applied", "jitter_order_0", "hue")]
    assert torch.equal(std[constant], torch.full((4,), 1e-3))


def test_the_generator_makes_it_deterministic():
    augment = BatchedAugment()
    images = _images(8)
    a, pa = augment(images, view=1, generator=torch.Generator().manual_seed(9))
    b, pb = augment(images, view=1, generator=torch.Generator().manual_seed(9))
    c, pc = augment(images, view=1, generator=torch.Generator().manual_seed(10))
    assert torch.equal(pa, pb) and torch.equal(a, b)
    assert not torch.equal(pa, pc)


def test_output_is_normalised_channels_last_and_identity_view():
    config = AugmentConfig()
    augment = BatchedAugment(config)
    images = _images(4, 40, 36)
    views, params = augment(images, view=0)
    assert views.shape == (4, 3, 32, 32) and views.dtype == torch.float32 and params.shape == (4, 18)
    assert views.is_contiguous(memory_format=torch.channels_last)
    square = _images(4)
    mean, std = torch.tensor(config.mean).view(1, 3, 1, 1), torch.tensor(config.std).view(1, 3, 1, 1)
    assert torch.allclose(augment.identity(square), (square.float() / 255 - mean) / std, atol=1e-5)
    # a non-square image: its centre square, resized
    x0 = augment.identity(images) * std + mean
    expected = TF.resized_crop(images.float() / 255, 2, 0, 36, 36, [32, 32], interpolation=InterpolationMode.BICUBIC,
                               antialias=False).clamp(0, 1)
    assert torch.allclose(x0, expected, atol=1e-5)


def test_bad_input_is_refused_with_a_clear_message():
    augment = BatchedAugment()
    with pytest.raises(ValueError, match="view"):
        augment.sample(4, view=2, image_size=(32, 32))
    with pytest.raises(ValueError, match=r"\[n, 3, H, W\]"):
        augment(torch.zeros(4, 1, 32, 32, dtype=torch.uint8), view=0)
    with pytest.raises(ValueError, match="params"):
        augment.apply(_images(4), torch.zeros(4, 17))
    with pytest.raises(ValueError, match="crop_scale"):
        AugmentConfig(crop_scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="blur_p"):
        AugmentConfig(views=(ViewConfig(blur_p=1.5, solarize_p=0.0),))


def test_batched_pipeline_reproduces_the_pil_reference_from_its_parameters():
    """The PIL baseline's parameter vector, applied by BatchedAugment (antialiased, as PIL), gives its image back
    up to PIL's 8-bit rounding after every step."""
    config = AugmentConfig(antialias=True)
    generator = torch.Generator().manual_seed(11)
    # smooth images: PIL's per-step rounding would otherwise dominate
    noise = torch.rand(24, 3, 36, 36, generator=generator)
    images = (torch.nn.functional.avg_pool2d(noise, 5, 1) * 255).round().to(torch.uint8)
    torch.manual_seed(12)
    for view in (0, 1):
        reference = ReferenceAugment(config, view=view)
        outputs, params = zip(*[reference(Image.fromarray(np.ascontiguousarray(image.permute(1, 2, 0).numpy())))
                                for image in images])
        outputs, params = torch.stack(outputs), torch.stack(params)
        assert params.shape == (24, 18)
        diff = (BatchedAugment(config).apply(images, params) - outputs).abs() * torch.tensor(config.std).view(1, 3, 1, 1)
        assert diff.mean() < 0.01 and diff.max() < 0.08
