"""Numbers without bounds (issue 23, class 3): every size and count from outside (a model's config.json, a
checkpoint's shapes, an option, a dataset's labels, an extraction's metadata) is checked against its stated limit
before anything is allocated. The commands run in a child process under a memory limit and a timeout, so an
unbounded allocation or loop fails the test, not the machine."""
from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
import torch
from hostile import one_line_error, run_capped, snapshot
from PIL import Image

from equimod_zoo.data.streams import expand_braces
from equimod_zoo.errors import LimitExceededError
from equimod_zoo.extraction.extract import extract_features
from equimod_zoo.limits import MAX_CLASSES, MAX_MODEL_PARAMETERS, MAX_RESOLUTION, MAX_SHARDS
from equimod_zoo.model_folder import check_model_size, write_model_folder

TINY = {"channels": (8, 16, 32, 64), "stem_width": 8}


def _model(folder, model, **config_changes):
    write_model_folder(folder, model, arch="resnet18_cifar", model_args=TINY)
    config = json.loads((folder / "config.json").read_text())
    for key, value in config_changes.items():
        section, _, field = key.partition(".")
        if field:
            config[section][field] = value
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _tree(folder, count=4):
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (8, 8), (i * 50, 100 if label == "a" else 0, 0)).save(folder / label / f"{i}.png")
    return folder


def _labelled_parquet(folder, labels):
    folder.mkdir()
    images = [Image.new("RGB", (8, 8), (i * 20, 0, 0)) for i in range(len(labels))]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    datasets.Dataset.from_dict({"image": images, "label": labels}, features=features).to_parquet(
        str(folder / "test.parquet"))
    return folder


def test_every_outside_number_is_refused_before_it_is_allocated(tmp_path, tiny_resnet18_cifar):
    model = _model(tmp_path / "model", tiny_resnet18_cifar)
    wide = _model(tmp_path / "wide", tiny_resnet18_cifar, model_args={"channels": [65536] * 4, "stem_width": 8})
    deep = _model(tmp_path / "deep", tiny_resnet18_cifar, model_args={**TINY, "layers": [100_000] * 4})
    huge_input = _model(tmp_path / "huge_input", tiny_resnet18_cifar, **{"pretrained_cfg.input_size": [3, 60000, 60000]})
    tiny_crop = _model(tmp_path / "tiny_crop", tiny_resnet18_cifar, **{"pretrained_cfg.crop_pct": 1e-9})
    images = _tree(tmp_path / "images")
    # a checkpoint of a few KB whose stride-0 views claim a 65536-wide ResNet (155 GB once built or copied)
    state = {k: v.clone() for k, v in tiny_resnet18_cifar.state_dict().items()}
    state["layer1.0.conv1.weight"] = torch.zeros(1).as_strided((65536, 65536, 3, 3), (0, 0, 0, 0))
    torch.save({"state_dict": state}, tmp_path / "claims.pt")
    assert (tmp_path / "claims.pt").stat().st_size < 1 << 20
    # an extraction whose metadata claims a trillion shards
    features = tmp_path / "features"
    extract_features(images, out=features, model=tiny_resnet18_cifar, num_workers=0, progress=False, device="cpu")
    info = json.loads((features / "extraction.json").read_text())
    (features / "extraction.json").write_text(json.dumps({**info, "num_shards": 10**12}))
    labels = _labelled_parquet(tmp_path / "labels", [0, 1, 10**12, 2])
    user_files = [model, wide, deep, huge_input, tiny_crop, images, tmp_path / "claims.pt", features, labels]
    before = snapshot(*user_files)

    extract = ["extract", "--images", str(images), "--workers", "0", "--device", "cpu"]
    cases = {
        "config widths": ([*extract, "--model", str(wide), "--out", str(tmp_path / "o1")],
                          ("config.json: resnet18_cifar with these model_args", f"over the limit of "
                           f"{MAX_MODEL_PARAMETERS:,} parameters")),
        "config blocks": ([*extract, "--model", str(deep), "--out", str(tmp_path / "o2")],
                          ("model_args layers", "up to 64")),
        "config input size": ([*extract, "--model", str(huge_input), "--out", str(tmp_path / "o3")],
                              ("pretrained_cfg input_size", f"over the limit of {MAX_RESOLUTION:,} px")),
        "config crop": ([*extract, "--model", str(tiny_crop), "--out", str(tmp_path / "o4")],
                        ("resized for a 1e-09 centre crop", "over the limit")),
        "checkpoint shapes": (["convert", str(tmp_path / "claims.pt"), "--from", "torchvision", "--out",
                               str(tmp_path / "o5")], ("claims.pt: the shapes of its tensors", "over the limit")),
        "convert widths": (["convert", str(tmp_path / "claims.pt"), "--from", "torchvision", "--out",
                            str(tmp_path / "o6"), "--model-args", '{"channels": [65536, 65536, 65536, 65536]}'],
                           ("over the limit",)),
        "--resolution": ([*extract, "--model", str(model), "--out", str(tmp_path / "o7"), "--resolution", "100000"],
                         ("--resolution: 100,000 px",)),
        "--batch-size": ([*extract, "--model", str(model), "--out", str(tmp_path / "o8"), "--batch-size",
                          str(10**9)], ("--batch-size: 1,000,000,000 images is over the limit",)),
        "brace range": (["extract", str(tmp_path / "shards/{0..999999999}.tar"), "--model", str(model), "--out",
                         str(tmp_path / "o9")], ("the shard names it expands to: 1,000,000,000", f"{MAX_SHARDS:,}")),
        "--epochs": (["train", "--recipe", "simclr_r18_cifar10_cpu", "--data", str(images), "--out",
                      str(tmp_path / "o10"), "--epochs", str(10**12), "--device", "cpu"], ("epochs: 1,000,000,000,000",)),
        "--set batch_size": (["train", "--recipe", "simclr_r18_cifar10_cpu", "--data", str(images), "--out",
                              str(tmp_path / "o11"), "--set", "batch_size=1000000000", "--device", "cpu"],
                             ("batch_size: 1,000,000,000 images",)),
        "--augs-per-image": (["probe-augs", "--model", str(model), "--dataset", f"imagefolder:{images}", "--split",
                              "train", "--num-images", "10", "--augs-per-image", str(10**9), "--device", "cpu"],
                             ("--augs-per-image: 1,000,000,000 is over the limit of 64",)),
        "--bootstrap": (["probe-augs", "--model", str(model), "--dataset", f"imagefolder:{images}", "--split",
                         "train", "--num-images", "10", "--bootstrap", str(10**12), "--device", "cpu"],
                        ("--bootstrap",)),
        "transfer --epochs": (["transfer", "--dataset", f"imagefolder:{images}", "--model", str(model), "--protocol",
                               "finetune", "--epochs", str(10**12), "--cache-dir", str(tmp_path / "c")],
                              ("--epochs: 1,000,000,000,000 is over the limit",)),
        "label": (["extract", "--dataset", str(labels), "--model", str(model), "--out", str(tmp_path / "o12"),
                   "--workers", "0", "--label-column", "label"], ("row 2 has label 1,000,000,000,000",
                                                                 f"{MAX_CLASSES:,} classes")),
        "shard count": (["linear", "--train", str(features), "--test", str(features), "--device", "cpu"],
                        ("extraction.json: num_shards: 1,000,000,000,000",)),
    }
    results = run_capped([argv for argv, _ in cases.values()], cwd=tmp_path, timeout=180)
    for (name, (_, needles)), result in zip(cases.items(), results):
        one_line_error(result, *needles)
    assert snapshot(*user_files) == before
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 13))


def test_limits_hold_in_the_library_and_let_real_sizes_through():
    with pytest.raises(LimitExceededError, match="2,000,000 is over the limit of 1,000,000"):
        expand_braces("s/{0..999}/{0..999}{a,b}.tar")  # groups multiply: counted before any name is made
    with pytest.raises(LimitExceededError, match=r"\(at least\): 1,000,001 is over"):
        expand_braces("s/{" + "," * 1100 + "{0..999}}.tar")  # nested groups: bounded while they are made
    assert len(expand_braces("s/{000..999}.tar")) == 1000
    assert check_model_size("resnet152", {}, where="resnet152") == 58_143_808  # the largest zoo-sized ResNet
    with pytest.raises(LimitExceededError, match="x: 592,750,053,184 parameters is over"):
        check_model_size("resnet18_cifar", {"channels": (65536,) * 4}, where="x")  # counted on the meta device


def test_the_readme_lists_every_limit_with_its_value():
    import equimod_zoo.limits as limits

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip(" `"): line.split("|")[2].strip() for line in readme.splitlines()
            if line.startswith("| `MAX_") or line.startswith("| `MIN_")}
    names = {name for name in vars(limits) if name.isupper()}
    assert set(rows) == names
    for name in names:
        value = getattr(limits, name)
        assert rows[name] == (f"{value:,}" if isinstance(value, int) else f"{value:g}"), name
