"""Every new base method, alone and with EquiMod, and EquiMod on a ConvNeXt and ViTs: each trains, resumes
exactly (BYOL-style momentum targets included), exports, and its export loads with `equimod_zoo.load` and
extracts features."""
from __future__ import annotations

import json

import numpy as np
import pytest
import safetensors.torch
import timm
import torch
from PIL import Image

import equimod_zoo
from equimod_zoo.constants import CONFIG_FILE, MODEL_DIR, WEIGHTS_FILE
from equimod_zoo.equimod.heads_file import load_equimod_heads, read_heads_schema
from equimod_zoo.extraction.extract import extract_features
from equimod_zoo.extraction.store import load_features
from equimod_zoo.training.trainer import train
from toy_training import tiny_recipe_named, write_toy_parquet

RECIPES = ("vicreg_r18_cifar10", "vicreg_equimod_r18_cifar10", "barlow_twins_r18_cifar10",
           "barlow_twins_equimod_r18_cifar10", "mocov3_r18_cifar10", "mocov3_equimod_r18_cifar10",
           "simclr_equimod_convnext_atto_cifar10", "simclr_equimod_vit_tiny_cifar10", "mocov3_equimod_vit_tiny_cifar10")


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    return write_toy_parquet(tmp_path_factory.mktemp("toy"), num_images=32)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.mark.parametrize("name", RECIPES)
def test_trains_resumes_exactly_exports_loads_and_extracts(name, toy_data, images, tmp_path):
    recipe = tiny_recipe_named(name, epochs=1)  # 32 images at batch 16: 2 steps

    def run(out, **kwargs):
        return train(recipe if not kwargs.get("resume") else None, data=toy_data, out=tmp_path / out,
                     cache_dir=tmp_path / "cache", progress=False, **kwargs)

    assert run("straight").step == 2
    assert run("resumed", max_steps=1).step == 1
    assert run("resumed", resume=True).finished
    straight = safetensors.torch.load_file(tmp_path / "straight" / MODEL_DIR / WEIGHTS_FILE)
    resumed = safetensors.torch.load_file(tmp_path / "resumed" / MODEL_DIR / WEIGHTS_FILE)
    assert straight.keys() == resumed.keys() and all(torch.equal(straight[k], resumed[k]) for k in straight)

    folder = tmp_path / "resumed" / MODEL_DIR  # the run's exported model; load(RUN) finds it too
    config = json.loads((folder / CONFIG_FILE).read_text())
    assert (config["architecture"], config["equimod"]["method"]) == (recipe.arch, recipe.method.name)
    schema = read_heads_schema(folder)
    assert schema.method == recipe.method.name and bool(load_equimod_heads(folder)) == recipe.method.equimod
    model = equimod_zoo.load(folder).eval()
    assert isinstance(model, timm.models.VisionTransformer) == (recipe.arch == "vit_tiny_patch16_224")
    summary = extract_features(images, out=tmp_path / "features", model=folder, batch_size=2, num_workers=0,
                               progress=False)
    paths, features = load_features(tmp_path / "features")
    assert summary.num_extracted == 3 and features.shape == (3, model.num_features) and np.isfinite(features).all()
