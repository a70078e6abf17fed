import json

import pytest
import timm
import torch

import equimod_zoo
from equimod_zoo import registry
from equimod_zoo.constants import WEIGHTS_FILE
from equimod_zoo.errors import ModelFolderError, WeightsIntegrityError, WeightsNotFoundError
from equimod_zoo.model_folder import write_model_folder
from equimod_zoo.registry import Catalogue, ZooEntry

TINY = {"channels": (8, 16, 32, 64), "stem_width": 8}


@pytest.fixture
def folder(tmp_path, tiny_resnet18_cifar):
    write_model_folder(tmp_path / "m", tiny_resnet18_cifar, arch="resnet18_cifar", model_args=TINY,
                       dtype=torch.float16, equimod={"method": "simclr_equimod"})
    return tmp_path / "m"


def _use_catalogue(monkeypatch, *entries):
    cat = Catalogue(tuple(entries))
    monkeypatch.setattr(registry, "catalogue", lambda: cat)
    monkeypatch.setattr("equimod_zoo.weights.catalogue", lambda: cat)
    monkeypatch.setattr("equimod_zoo.loading.catalogue", lambda: cat)


def _entry(**kw):
    base = dict(name="tiny_r18_cifar10", arch="resnet18_cifar", tag="tiny", method="simclr_equimod",
                data="cifar10", num_train_images=50000, epochs=1, recipe="r", license="apache-2.0",
                status="available")
    return ZooEntry(**{**base, **kw})


def test_load_folder_gives_same_features_and_data_config(folder, tiny_resnet18_cifar):
    model = equimod_zoo.load(folder).eval()
    x = torch.randn(2, 3, 32, 32)
    # fp16 storage: features agree to half precision
    torch.testing.assert_close(model(x), tiny_resnet18_cifar(x), rtol=2e-2, atol=2e-2)
    cfg = timm.data.resolve_model_data_config(model)
    assert cfg["input_size"] == (3, 32, 32) and cfg["interpolation"] == "bicubic"
    assert next(model.parameters()).dtype == torch.float32


def test_load_with_new_head_and_features_only(folder):
    model = equimod_zoo.load(folder, num_classes=7)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 7)
    feats = equimod_zoo.load(folder, features_only=True)
    assert len(feats(torch.randn(1, 3, 32, 32))) == 5


def test_plain_timm_loads_our_folder(folder, tiny_resnet18_cifar):
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), tiny_resnet18_cifar(x), rtol=2e-2, atol=2e-2)


def test_sha256_mismatch_is_refused(folder):
    config = json.loads((folder / "config.json").read_text())
    config["equimod"]["weights_sha256"] = "0" * 64
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsIntegrityError, match="does not match"):
        equimod_zoo.load(folder)


def test_registry_entry_loads_from_bundled_folder_and_checks_sha(monkeypatch, folder):
    monkeypatch.setattr(registry, "BUNDLED_MODELS_DIR", folder.parent)
    good = json.loads((folder / "config.json").read_text())["equimod"]["weights_sha256"]
    _use_catalogue(monkeypatch, _entry(folder="m", sha256=good))
    assert equimod_zoo.load("tiny_r18_cifar10").pretrained_cfg["file"].endswith(WEIGHTS_FILE)
    _use_catalogue(monkeypatch, _entry(folder="m", sha256="f" * 64))
    with pytest.raises(WeightsIntegrityError):
        equimod_zoo.load("tiny_r18_cifar10")


def test_offline_error_names_model_places_and_remedy(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "BUNDLED_MODELS_DIR", tmp_path)
    _use_catalogue(monkeypatch, _entry(folder="absent", hf_hub_id="equimod-zoo/tiny", sha256="a" * 64))
    with pytest.raises(WeightsNotFoundError) as info:
        equimod_zoo.load("tiny_r18_cifar10")
    message = str(info.value)
    assert "tiny_r18_cifar10" in message and "bundled folder" in message
    assert "Hugging Face cache" in message and "equimod-zoo/tiny" in message and "To get them" in message


def test_recipe_only_says_so_and_names_nearest(monkeypatch, folder):
    monkeypatch.setattr(registry, "BUNDLED_MODELS_DIR", folder.parent)
    planned = _entry(name="planned_r50", arch="resnet50", status="recipe-only")
    _use_catalogue(monkeypatch, planned, _entry(folder="m"))
    with pytest.raises(WeightsNotFoundError, match="recipe-only.*nearest available model is 'tiny_r18_cifar10'"):
        equimod_zoo.load("planned_r50")
    assert equimod_zoo.load("planned_r50", pretrained=False).num_features == 2048


def test_partial_or_foreign_weights_are_refused(folder):
    from safetensors.torch import save_file

    save_file({"conv1.weight": torch.zeros(64, 3, 3, 3)}, str(folder / WEIGHTS_FILE))
    config = json.loads((folder / "config.json").read_text())
    del config["equimod"]["weights_sha256"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match="does not fit resnet18_cifar: missing"):
        equimod_zoo.load(folder)


def test_folder_without_config_is_a_clear_error(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelFolderError, match="not a model folder"):
        equimod_zoo.load(tmp_path)


def test_trained_weights_report_their_own_timm_tag_not_untrained(tmp_path, tiny_resnet18_cifar):
    from equimod_zoo.model_folder import write_model_folder
    from equimod_zoo.registry import list_models

    for entry in list_models(pretrained=True)[:1]:
        assert equimod_zoo.load(entry.name).pretrained_cfg["tag"] == entry.tag
    write_model_folder(tmp_path / "my_run", tiny_resnet18_cifar, arch="resnet18_cifar", model_args=TINY)
    assert equimod_zoo.load(tmp_path / "my_run").pretrained_cfg["tag"] == "my_run"
