"""Each recipe's augmentation pipeline applies what the recipe says and nothing else, without host syncs.

SimCLR(+EquiMod) uses the official SimCLR pipeline (both views alike; CIFAR-10 without blur or
solarize, 15 parameters; ImageNet with blur p 0.5, 17), BYOL(+EquiMod) its asymmetric pair (18).
Models trained before the parameter list became recipe data still load and probe.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

import equimod_zoo
from equimod_zoo.constants import CONFIG_FILE, HEADS_FILE
from equimod_zoo.equimod.augment import NUM_PARAMS, PARAM_NAMES, BatchedAugment
from equimod_zoo.equimod.heads_file import SCHEMA_KEY, load_equimod_heads
from equimod_zoo.training.recipe import load_recipe

RAW = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # outputs in [0, 1], comparable with torchvision's
IDX = {name: index for index, name in enumerate(PARAM_NAMES)}
PIPELINES = {"simclr_r18_cifar10": 15, "simclr_r50_in1k": 17, "byol_r18_cifar10": 18, "byol_r50_in1k": 18}
JITTER = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)


def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, 256, (n, 3, size // 4, size // 4), generator=generator).float()
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear").round().to(torch.uint8)


def _torchvision_view(image: torch.Tensor, p: torch.Tensor, config, *, blur: bool, solarize: bool) -> torch.Tensor:
    """What torchvision does with the full 18-vector `p`; blur and solarize only where the pipeline has them."""
    top, left, height, width = (int(v) for v in p[:4])
    x = TF.resized_crop(image, top, left, height, width, [config.size, config.size],
                        interpolation=InterpolationMode.BICUBIC, antialias=config.antialias).clamp(0, 1)
    if p[IDX["flip"]] > 0.5:
        x = TF.horizontal_flip(x)
    if p[IDX["jitter_applied"]] > 0.5:
        for op in p[IDX["jitter_order_0"]:IDX["jitter_order_3"] + 1].long().tolist():
            x = JITTER[op](x, float(p[IDX["brightness"] + op]))
    if p[IDX["grayscale"]] > 0.5:
        x = TF.rgb_to_grayscale(x, num_output_channels=3)
    if blur and p[IDX["blur_applied"]] > 0.5:
        x = TF.gaussian_blur(x, [config.kernel_size] * 2, [float(p[IDX["blur_sigma"]])] * 2)
    if solarize and p[IDX["solarize"]] > 0.5:
        x = TF.solarize(x, 128 / 255)
    return x


@pytest.mark.parametrize("name", PIPELINES)
def test_each_pipeline_applies_what_its_recipe_says_and_nothing_else(name):
    recipe = load_recipe(name)
    config = dataclasses.replace(recipe.augment, **RAW)
    augment = BatchedAugment(config)
    blur, solarize = "blur_applied" in config.params, "solarize" in config.params
    assert len(config.params) == recipe.method.param_dim == PIPELINES[name]
    assert blur == (name != "simclr_r18_cifar10") and solarize == name.startswith("byol")
    n = 4 if recipe.data_size > 64 else 16
    images = _images(n, recipe.data_size)
    generator = torch.Generator().manual_seed(1)
    for view in range(len(config.views)):
        params = augment.sample(n, view=view, image_size=(recipe.data_size,) * 2, generator=generator)
        assert params.shape == (n, PIPELINES[name])
        # force every operation the pipeline has onto some samples, so each is checked against torchvision
        for flag in ("jitter_applied", "grayscale", "blur_applied", "solarize"):
            if flag in config.params:
                params[::2, config.params.index(flag)] = 1
        if blur:
            sigma = params[:, config.params.index("blur_sigma")]
            params[:, config.params.index("blur_sigma")] = torch.where(sigma > 0, sigma, torch.full_like(sigma, 0.7))
        full = augment.full_params(params)
        expected = torch.stack([_torchvision_view(image, p, config, blur=blur, solarize=solarize)
                                for image, p in zip(images.float() / 255, full)])
        assert torch.allclose(augment.apply(images, params), expected, atol=1e-4), (name, view)
    # parameters that say "nothing applied" leave the image as it is: no operation hides outside the vector
    neutral = augment.full_params(torch.zeros(n, len(config.params)))  # the unrecorded entries at neutral
    neutral[:, IDX["crop_height"]:IDX["crop_width"] + 1] = config.size
    neutral[:, IDX["jitter_order_0"]:IDX["jitter_order_3"] + 1] = torch.arange(4.0)
    neutral[:, IDX["brightness"]:IDX["saturation"] + 1] = 1
    columns = [IDX[p] for p in config.params]
    small = _images(n, config.size, seed=2)
    assert torch.allclose(augment.apply(small, neutral[:, columns]), small.float() / 255, atol=1e-5)


@pytest.mark.parametrize("name", PIPELINES)
def test_sampled_parameters_follow_the_recipes_probabilities_and_ranges(name):
    config = load_recipe(name).augment
    augment = BatchedAugment(config)
    generator = torch.Generator().manual_seed(3)
    n = 20_000
    for view, view_config in enumerate(config.views):
        params = augment.full_params(augment.sample(n, view=view, image_size=(64, 64), generator=generator))
        rate = {flag: params[:, IDX[flag]].mean().item() for flag in ("flip", "jitter_applied", "grayscale",
                                                                       "blur_applied", "solarize")}
        assert rate["flip"] == pytest.approx(config.flip_p, abs=0.02)
        assert rate["jitter_applied"] == pytest.approx(config.jitter_p, abs=0.02)
        assert rate["grayscale"] == pytest.approx(config.grayscale_p, abs=0.02)
        assert rate["blur_applied"] == pytest.approx(view_config.blur_p, abs=0.02)
        assert rate["solarize"] == pytest.approx(view_config.solarize_p, abs=0.02)
        jittered = params[params[:, IDX["jitter_applied"]] > 0.5]
        for op in ("brightness", "contrast", "saturation"):
            strength = getattr(config, op)
            values = jittered[:, IDX[op]]
            assert values.min() >= 1 - strength and values.max() <= 1 + strength
            assert values.max() > 1 + 0.95 * strength  # the full range is used: 0.4 is not 0.2
        hue = jittered[:, IDX["hue"]]
        assert hue.abs().max() <= config.hue and hue.abs().max() > 0.95 * config.hue
    if name.startswith("simclr"):
        assert config.views[0] == config.views[1]  # one distribution for both views


def test_imagenet_x0_is_resize_256_then_centre_crop_224():
    config = dataclasses.replace(load_recipe("simclr_r50_in1k").augment, **RAW)
    augment = BatchedAugment(config)
    stored = _images(2, 256)  # training stores ImageNet at 256 px (short side, centre square)
    expected = TF.center_crop(TF.resize(stored.float() / 255, [256], interpolation=InterpolationMode.BICUBIC,
                                        antialias=True), [224, 224])
    assert torch.equal(augment.identity(stored), expected)
    wide = torch.cat([stored, stored[..., :44]], dim=-1)  # 256 x 300: Resize(256) leaves it, CenterCrop(224)
    assert torch.equal(augment.identity(wide), TF.center_crop(wide.float() / 255, [224, 224]))
    cifar = BatchedAugment(dataclasses.replace(load_recipe("simclr_r18_cifar10").augment, **RAW))
    small = _images(2, 32)
    assert torch.equal(cifar.identity(small), small.float() / 255)  # CIFAR-10 x0: only normalised


class _OpRecorder(TorchDispatchMode):
    """Every aten op that runs inside the block."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[str, tuple]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append((str(func.overloadpacket), args))
        return func(*args, **(kwargs or {}))


# Ops that make a GPU stream wait for the host or the host for the GPU: a value read back
# (`.item()`, `bool(t)`), an output whose size depends on the data, a tensor made from Python data
# (a host-to-device copy on the GPU).
SYNCING = {"aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten.is_nonzero", "aten.equal",
           "aten.unique", "aten._unique2", "aten.unique_consecutive", "aten.lift_fresh", "aten.lift_fresh_copy",
           "aten.masked_scatter", "aten.item"}


def _syncing_ops(recorder: _OpRecorder) -> list[str]:
    bad = [name for name, _ in recorder.ops if name in SYNCING]
    for name, args in recorder.ops:  # boolean-mask indexing: data-dependent size
        if name in ("aten.index", "aten.index_put", "aten.index_put_"):
            indices = args[1] if len(args) > 1 else ()
            if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices or ()):
                bad.append(f"{name} with a boolean mask")
    return bad


@pytest.mark.parametrize("name", ["simclr_r18_cifar10", "byol_r18_cifar10", "simclr_r50_in1k"])
def test_the_augmentation_step_makes_no_host_sync(name):
    recipe = load_recipe(name)
    size = 64 if recipe.data_size > 64 else recipe.data_size
    config = dataclasses.replace(recipe.augment, size=min(recipe.augment.size, size - 8), blur_kernel=5,
                                 x0_resize=size if recipe.augment.x0_resize else None)
    augment = BatchedAugment(config, select_subsets=False)  # what runs on a GPU
    images = _images(8, size)
    generator = torch.Generator().manual_seed(0)

    def step():
        views = [augment(images, view=v, generator=generator) for v in range(len(config.views))]
        return views, augment.identity(images)

    step()  # the first call builds the per-device constants, once
    with _OpRecorder() as recorder:
        (first, _), _ = step()
    assert recorder.ops and _syncing_ops(recorder) == []
    assert first[1].shape == (8, len(config.params))
    # the recorder does see a sync when there is one
    with _OpRecorder() as recorder:
        images[images > 128].sum().item()
    assert len(_syncing_ops(recorder)) == 2


@pytest.mark.parametrize("name", ["byol_r18_cifar10", "simclr_r50_in1k"])
def test_blending_on_all_samples_gives_the_pixels_of_selecting_them(name):
    recipe = load_recipe(name)
    config = dataclasses.replace(recipe.augment, size=min(recipe.augment.size, 48), blur_kernel=5, x0_resize=None)
    images = _images(16, 56 if recipe.data_size > 56 else recipe.data_size, seed=4)
    params = BatchedAugment(config).sample(16, view=1, image_size=tuple(images.shape[-2:]),
                                           generator=torch.Generator().manual_seed(5))
    for flag in ("grayscale", "blur_applied", "solarize"):  # each on some samples and off on others
        if flag in config.params:
            params[:, config.params.index(flag)] = torch.arange(16) % 3 == 0
    if "blur_sigma" in config.params:
        params[:, config.params.index("blur_sigma")] = torch.linspace(0.1, 2.0, 16) * (torch.arange(16) % 3 == 0)
    params[:, config.params.index("jitter_applied")] = 1  # hue due at some position for most samples
    assert (params[:, config.params.index("hue")] != 0).any()
    selected = BatchedAugment(config, select_subsets=True).apply(images, params)
    blended = BatchedAugment(config, select_subsets=False).apply(images, params)
    assert torch.allclose(selected, blended, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_no_sync_on_the_gpu():
    config = load_recipe("byol_r18_cifar10").augment
    augment = BatchedAugment(config)
    images = _images(64, 32).cuda()
    generator = torch.Generator(device="cuda").manual_seed(0)
    augment(images, view=0, generator=generator)
    augment.identity(images)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for view in (0, 1):
            augment(images, view=view, generator=generator)
        augment.identity(images)
    finally:
        torch.cuda.set_sync_debug_mode("default")


BUNDLED = Path(equimod_zoo.__file__).parent / "zoo" / "models"


@pytest.fixture
def tiny_parquet(tmp_path):
    import datasets
    from PIL import Image

    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    pixels = _images(24, 40, seed=5).permute(0, 2, 3, 1).numpy()
    data = datasets.Dataset.from_dict({"img": [Image.fromarray(p) for p in pixels], "label": [i % 2 for i in range(24)]},
                                      features=features)
    (tmp_path / "tiny").mkdir()
    data.to_parquet(str(tmp_path / "tiny" / "test.parquet"))
    return tmp_path / "tiny"


@pytest.mark.parametrize("folder", sorted(BUNDLED.glob("*/config.json")), ids=lambda p: p.parent.name)
def test_bundled_models_load_with_the_pipeline_they_were_trained_with(folder):
    from equimod_zoo.model_folder import ModelConfig
    from equimod_zoo.sensitivity.sampling import probe_augmentation

    config = ModelConfig.read(folder.parent)
    assert equimod_zoo.load(folder.parent) is not None
    augmentation = probe_augmentation(config, mean=(0.5,) * 3, std=(0.25,) * 3)
    recorded = config.equimod.recipe_config["augment"]
    assert augmentation.augment.config.params == tuple(recorded.get("params") or PARAM_NAMES)
    assert augmentation.augment.config.views == load_recipe(folder.parent / "recipe.yaml").augment.views


@pytest.mark.parametrize("name", ["simclr_equimod_r18_cifar10"])
def test_models_trained_before_this_change_still_load_and_probe(name, tiny_parquet):
    from equimod_zoo.sensitivity.run import probe_augmentations

    folder = BUNDLED / name
    if not (folder / CONFIG_FILE).is_file():
        pytest.skip(f"{name} is not bundled")
    recorded = json.loads((folder / CONFIG_FILE).read_text())["equimod"]
    assert equimod_zoo.load(folder) is not None
    report = probe_augmentations("tiny", model=str(folder), data_dir=str(tiny_parquet), num_images=20,
                                 num_bootstrap=5, batch_size=20, device="cpu")
    params = list(report["inputs"]["view"])
    if "params" not in recorded["recipe_config"]["augment"]:  # trained on the 18-entry pipeline
        assert params == list(PARAM_NAMES) and len(params) == NUM_PARAMS
    if (folder / HEADS_FILE).is_file() and SCHEMA_KEY not in recorded:
        assert load_equimod_heads(folder).param_names == tuple(params)
        assert report["equivariance"] is not None and report["equivariance"]["num_samples"] == 40
