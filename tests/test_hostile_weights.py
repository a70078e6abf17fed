"""Weights that are not what they claim (issue 23, class 4): integer or boolean tensors where the model holds
floats, a data config that divides by almost zero, weights that overflow: refused where they are read, and
features are never written (or probed) non-finite without an error naming the model and why."""
from __future__ import annotations

import json

import numpy as np
import pytest
import safetensors.torch
import torch
from hostile import one_line_error, snapshot
from PIL import Image
from test_export_card import make_run_folder
from typer.testing import CliRunner

import equimod_zoo
from equimod_zoo.cli import app
from equimod_zoo.errors import NonFiniteFeaturesError, WeightsIntegrityError
from equimod_zoo.extraction.extract import extract_features
from equimod_zoo.model_folder import sha256_file, write_model_folder
from equimod_zoo.constants import WEIGHTS_FILE

TINY = {"channels": (8, 16, 32, 64), "stem_width": 8}


def _tamper(folder, *, config=None, **tensors):
    """Replace tensors of FOLDER's weights (and config fields), recording the new sha256 as an attacker would."""
    path = folder / WEIGHTS_FILE
    state = safetensors.torch.load_file(str(path))
    state.update(tensors)
    safetensors.torch.save_file(state, str(path))
    data = json.loads((folder / "config.json").read_text())
    data["equimod"]["weights_sha256"] = sha256_file(path)
    for key, value in (config or {}).items():
        data["pretrained_cfg"][key] = value
    (folder / "config.json").write_text(json.dumps(data))
    return folder


@pytest.fixture
def model(tmp_path, tiny_resnet18_cifar):
    write_model_folder(tmp_path / "model", tiny_resnet18_cifar, arch="resnet18_cifar", model_args=TINY)
    return tmp_path / "model"


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (i * 80, 200 if label == "a" else 0, 30)).save(folder / label / f"{i}.png")
    return folder


def _weight(model, key):
    return safetensors.torch.load_file(str(model / WEIGHTS_FILE))[key]


@pytest.mark.parametrize(("case", "needle"), [
    ("int64 conv", "tensor 'conv1.weight' is int64, where the model holds floating values"),
    ("bool bn", "tensor 'bn1.running_var' is bool, where the model holds floating values"),
    ("float counter", "tensor 'bn1.num_batches_tracked' is float32, where the model holds integer values"),
    ("tiny std", "pretrained_cfg std [0.25, 1e-30, 0.25] has a value below the limit of 0.001"),
    ("huge mean", "pretrained_cfg mean [1e+30, 0.5, 0.5] is not in [0, 1]"),
])
def test_weights_and_data_configs_that_are_not_what_they_claim_are_refused_where_read(tmp_path, model, images,
                                                                                       case, needle):
    tampered = {
        "int64 conv": lambda: _tamper(model, **{"conv1.weight": _weight(model, "conv1.weight").long()}),
        "bool bn": lambda: _tamper(model, **{"bn1.running_var": torch.ones(8, dtype=torch.bool)}),
        "float counter": lambda: _tamper(model, **{"bn1.num_batches_tracked": torch.tensor(1.5)}),
        "tiny std": lambda: _tamper(model, config={"std": [0.25, 1e-30, 0.25]}),
        "huge mean": lambda: _tamper(model, config={"mean": [1e30, 0.5, 0.5]}),
    }[case]()
    before = snapshot(images, tampered)
    result = CliRunner().invoke(app, ["extract", "--images", str(images), "--model", str(tampered), "--out",
                                      str(tmp_path / "out"), "--workers", "0", "--device", "cpu"])
    one_line_error(result, needle)
    assert not (tmp_path / "out").exists() and snapshot(images, tampered) == before


def test_convert_and_publish_refuse_integer_weights_in_one_line(tmp_path, tiny_resnet18_cifar):
    state = {k: v.clone() for k, v in tiny_resnet18_cifar.state_dict().items()}
    state["layer1.0.conv1.weight"] = state["layer1.0.conv1.weight"].mul(1000).to(torch.int32)
    torch.save({"state_dict": state}, tmp_path / "ints.pt")
    result = CliRunner().invoke(app, ["convert", str(tmp_path / "ints.pt"), "--from", "torchvision", "--out",
                                      str(tmp_path / "converted")])
    one_line_error(result, "ints.pt: tensor 'layer1.0.conv1.weight' is int32")
    assert not (tmp_path / "converted").exists()

    run = tmp_path / "run"
    make_run_folder(run, tiny_resnet18_cifar, results=False)
    _tamper(run, **{"layer4.1.bn2.weight": torch.full((64,), 3, dtype=torch.int8)})
    before = snapshot(run)
    result = CliRunner().invoke(app, ["publish", str(run), "--repo-id", "org/tiny", "--out", str(tmp_path / "pub"),
                                      "--dry-run"])
    one_line_error(result, "tensor 'layer4.1.bn2.weight' is int8")
    assert not (tmp_path / "pub").exists() and snapshot(run) == before
    with pytest.raises(WeightsIntegrityError, match="is int8"):
        equimod_zoo.load(run)


@pytest.mark.parametrize(("key", "value"), [("conv1.weight", 1e30),  # features inf in float32
                                            ("layer4.1.bn2.bias", 1e6)])  # finite, but beyond float16's 65504
def test_features_are_never_written_non_finite(tmp_path, model, images, key, value):
    _tamper(model, **{key: torch.full_like(_weight(model, key), value)})
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["extract", "--images", str(images), "--model", str(model), "--out", str(out),
                                      "--workers", "0", "--device", "cpu", "--precision", "fp32"])
    one_line_error(result, "model: gives non-finite features", str(images), "of shard 0", "its weights or its data config")
    assert not list(out.glob("img_emb/*.npy")) and not list(out.glob("metadata/*.parquet"))


def test_the_probes_refuse_non_finite_inputs(tmp_path, model, images, tiny_resnet18_cifar):
    from equimod_zoo.data.sources import imagefolder_source

    features = tmp_path / "features"
    extract_features(imagefolder_source(images), out=features, model=model, num_workers=0, progress=False,
                     device="cpu")
    block = next(features.glob("img_emb/*.npy"))
    array = np.load(block)
    array[1, 3] = np.nan
    np.save(block, array)  # a features file edited after the fact
    result = CliRunner().invoke(app, ["linear", "--train", str(features), "--test", str(features), "--device", "cpu"])
    one_line_error(result, "img_emb_0.npy: holds NaN or inf features (model 'model')")
    for i in range(3, 8):  # enough images to probe
        Image.new("RGB", (8, 8), (i * 30, 60, 90)).save(images / "a" / f"{i}.png")
    _tamper(model, **{"conv1.weight": torch.full_like(_weight(model, "conv1.weight"), 1e38)})
    from equimod_zoo.sensitivity.run import probe_augmentations

    with pytest.raises(NonFiniteFeaturesError, match="model: gives non-finite features"):
        probe_augmentations(f"imagefolder:{images}", model=model, split="train", num_images=11, num_bootstrap=10,
                            batch_size=4, device="cpu")
