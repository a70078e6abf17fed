"""timm-native: zoo weights as timm pretrained tags; timm's own save_for_hf folders load everywhere."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import timm
import torch
from PIL import Image
try:
    from timm.models import save_for_hf
except ImportError:  # timm < 1.0.2x exports it from its hub module only (the test's concern, not the core's)
    from timm.models._hub import save_for_hf
from typer.testing import CliRunner

import equimod_zoo
from equimod_zoo.cli import app
from equimod_zoo.extraction.store import load_features
from equimod_zoo.registry import list_models
from equimod_zoo.weights import locate_weights
from equimod_zoo.errors import UnverifiedWeightsWarning, WeightsIntegrityError

TINY = {"channels": (8, 16, 32, 64), "stem_width": 8}


def _ours():
    return [e for e in list_models(status="available") if e.arch.endswith("_cifar")]


def test_every_available_zoo_entry_on_our_architectures_is_a_timm_tag():
    assert _ours(), "the zoo bundles CIFAR-stem entries"
    listed = set(timm.list_pretrained("*_cifar*"))
    assert {e.arch_tag for e in _ours()} <= listed
    assert not any(name.endswith(".untrained") for name in listed)
    for entry in _ours():
        cfg = timm.models.get_pretrained_cfg(entry.arch_tag)
        assert cfg.num_classes == 0 and (cfg.file or cfg.hf_hub_id)


def test_timm_create_model_with_a_tag_loads_the_checked_weights(monkeypatch):
    entry = _ours()[0]
    model = timm.create_model(entry.arch_tag, pretrained=True).eval()
    reference = equimod_zoo.load(entry.name).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))
    assert model.num_classes == 0 and timm.data.resolve_model_data_config(model)["input_size"] == (3, 32, 32)
    assert timm.create_model(entry.arch_tag, pretrained=True, num_classes=5)(x).shape == (2, 5)
    # the sha256 is still checked on this path
    monkeypatch.setattr("equimod_zoo.weights.sha256_file", lambda path: "0" * 64)
    with pytest.raises(WeightsIntegrityError, match="does not match"):
        timm.create_model(entry.arch_tag, pretrained=True)


def test_the_bare_architecture_names_no_weights():
    assert timm.create_model("resnet18_cifar").pretrained_cfg["tag"] == "untrained"
    with pytest.raises(ValueError, match="has no default weights; name them with a tag"):
        timm.create_model("resnet18_cifar", pretrained=True)


def test_no_private_timm_imports_in_the_core():
    import pathlib

    root = pathlib.Path(equimod_zoo.__file__).parent
    offenders = [str(p) for p in root.rglob("*.py") if "timm.models._" in p.read_text()]
    assert not offenders


@pytest.fixture
def timm_folder(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("resnet18_cifar", num_classes=10, **TINY).eval()
    save_for_hf(model, str(tmp_path / "timm_saved"), safe_serialization=True)
    return tmp_path / "timm_saved", model


def test_a_save_for_hf_folder_loads(timm_folder):
    folder, model = timm_folder
    x = torch.randn(2, 3, 32, 32)
    with pytest.warns(UnverifiedWeightsWarning):
        headless = equimod_zoo.load(folder).eval()
    with pytest.warns(UnverifiedWeightsWarning):
        with_head = equimod_zoo.load(folder, num_classes=10).eval()
    with torch.no_grad():
        torch.testing.assert_close(with_head(x), model(x))
        torch.testing.assert_close(headless(x), model.forward_head(model.forward_features(x), pre_logits=True))
    with pytest.warns(UnverifiedWeightsWarning):
        assert locate_weights(folder).config.num_classes == 10


def test_a_save_for_hf_folder_without_safetensors_says_how_to_save_it(tmp_path):
    from equimod_zoo.errors import WeightsNotFoundError

    save_for_hf(timm.create_model("resnet18_cifar", **TINY), str(tmp_path / "pickled"))  # timm's default: a .bin
    with pytest.raises(WeightsNotFoundError, match=r"holds pytorch_model\.bin, which is never read .*"
                                                   r"safe_serialization=True"):
        equimod_zoo.load(tmp_path / "pickled")


def test_a_save_for_hf_folder_extracts(timm_folder, tmp_path):
    folder, _ = timm_folder
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (16, 16, 3), np.uint8)).save(images / f"{i}.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnverifiedWeightsWarning)
        result = CliRunner().invoke(app, ["extract", "--images", str(images), "--model", str(folder),
                                          "--out", str(tmp_path / "out"), "--num-workers", "0"])
    assert result.exit_code == 0, result.output
    assert load_features(tmp_path / "out")[1].shape == (3, 64)
