"""compile="auto": compiled on a bf16 CPU when enough images remain to pay for it, never for a finished run."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from equimod_zoo.extraction import extract
from equimod_zoo.extraction.extract import extract_features
from equimod_zoo.extraction.store import load_features

OPTIONS = dict(batch_size=4, shard_size=4, num_workers=0, progress=False, precision="bf16")


@pytest.fixture
def images(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    for i in range(10):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (24, 20, 3), np.uint8)).save(root / f"{i}.png")
    return root


@pytest.fixture
def compiles(monkeypatch):
    """Record each torch.compile call (the real one is too slow for a unit test) and run eagerly."""
    calls = []

    def fake_compile(network, **options):
        calls.append(options)
        return network

    monkeypatch.setattr(torch, "compile", fake_compile)
    return calls


def test_auto_compiles_on_cpu_from_the_threshold_and_not_when_done(images, tmp_path, tiny_resnet18_cifar, compiles,
                                                                    monkeypatch):
    monkeypatch.setattr(extract, "AUTO_COMPILE_MIN_IMAGES", 11)
    assert not extract_features(images, out=tmp_path / "few", model=tiny_resnet18_cifar, **OPTIONS).compiled
    assert compiles == []  # 10 images: not worth a compile

    monkeypatch.setattr(extract, "AUTO_COMPILE_MIN_IMAGES", 10)
    assert extract_features(images, out=tmp_path / "enough", model=tiny_resnet18_cifar, **OPTIONS).compiled
    assert compiles == [{"dynamic": False, "options": {"freezing": True}}]
    np.testing.assert_array_equal(load_features(tmp_path / "enough")[1], load_features(tmp_path / "few")[1])

    summary = extract_features(images, out=tmp_path / "enough", model=tiny_resnet18_cifar, **OPTIONS)
    assert summary.shards_skipped == 3 and not summary.compiled and len(compiles) == 1  # nothing left to extract: no compile

    extract_features(images, out=tmp_path / "forced", model=tiny_resnet18_cifar, compile=True, **OPTIONS)
    extract_features(images, out=tmp_path / "never", model=tiny_resnet18_cifar, compile=False, **OPTIONS)
    assert len(compiles) == 2


def test_auto_compiles_only_bf16_cpu_runs():
    cpu, bf16 = torch.device("cpu"), torch.bfloat16
    assert extract._compile_pays("auto", cpu, bf16, 10**6)
    assert not extract._compile_pays("auto", cpu, None, 10**6)  # fp32: the compiled network is no faster
    assert not extract._compile_pays("auto", torch.device("cuda"), bf16, 10**6)
    assert not extract._compile_pays("auto", cpu, bf16, 0)
    assert extract._compile_pays(True, cpu, None, 0) and not extract._compile_pays(False, cpu, bf16, 10**6)
    with pytest.raises(ValueError, match="compile: 'yes'"):
        extract._compile_pays("yes", cpu, bf16, 1)
