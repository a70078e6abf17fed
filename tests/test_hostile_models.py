"""Hostile model folders and checkpoints: config fields are never paths, integrity is not optional,
expected errors are one line (exit 2, no traceback), and real bugs keep their traceback."""
import json
import zipfile

import numpy as np
import pytest
import safetensors.torch
import torch
import typer
from typer.testing import CliRunner

import equimod_zoo
from equimod_zoo.cli import app
from equimod_zoo.cli.errors import user_errors
from equimod_zoo.constants import WEIGHTS_FILE
from equimod_zoo.devices import resolve_device
from equimod_zoo.errors import DeviceError, ModelFolderError, UnverifiedWeightsWarning, UserError, WeightsIntegrityError
from equimod_zoo.hub.convert import convert_checkpoint, read_checkpoint
from equimod_zoo.model_folder import write_model_folder

TINY = {"channels": (8, 16, 32, 64), "stem_width": 8}


@pytest.fixture
def folder(tmp_path, tiny_resnet18_cifar):
    write_model_folder(tmp_path / "m", tiny_resnet18_cifar, arch="resnet18_cifar", model_args=TINY)
    return tmp_path / "m"


def _edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key].update(value)
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config))


def _one_line_exit_2(result, *needles):
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    for needle in needles:
        assert needle in text, text
    return text


def _images(tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    Image.new("RGB", (8, 8), (200, 10, 10)).save(folder / "a.png")
    return folder


def test_checkpoint_path_in_model_args_never_reaches_timm(folder, tmp_path, monkeypatch):
    secret = tmp_path / "secret.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, secret)
    _edit_config(folder, model_args={**TINY, "checkpoint_path": str(secret)})
    opened = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: opened.append(a) or {})
    with pytest.raises(ModelFolderError, match="model_args 'checkpoint_path' is not a constructor argument"):
        equimod_zoo.load(folder)
    assert not opened


@pytest.mark.parametrize("architecture", ["local-dir:/etc", "hf-hub:someone/resnet18", "../resnet18",
                                          "resnet18_nope", 7])
def test_architecture_must_be_a_registered_name(folder, architecture, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: pytest.fail("reached the network"))
    _edit_config(folder, architecture=architecture)
    with pytest.raises(ModelFolderError, match="is not a registered timm architecture name"):
        equimod_zoo.load(folder)
    with pytest.raises(ModelFolderError):
        equimod_zoo.load(folder, pretrained=False)


@pytest.mark.parametrize("model_args, needle", [
    ({"channels": [8, 16]}, "channels = [8, 16] is not four positive integers"),
    ({"stem_width": "8"}, "stem_width = '8' is not a positive integer"),
    ({"pretrained_cfg": {"file": "/etc/passwd"}}, "'pretrained_cfg' is not a constructor argument"),
    ({"block": "Bottleneck"}, "'block' is not a constructor argument"),
    ([1, 2], "model_args must be an object"),
])
def test_bad_model_args_are_refused_with_the_key(folder, model_args, needle):
    _edit_config(folder, model_args=model_args)
    with pytest.raises(ModelFolderError, match="config.json") as error:
        equimod_zoo.load(folder)
    assert needle in str(error.value)


@pytest.mark.parametrize("pretrained_cfg, needle", [
    ({"input_size": "big"}, "input_size"),
    ({"input_size": [3, 0, 32]}, "input_size"),
    ({"mean": ["a", "b", "c"]}, "mean"),
    ({"std": [0, 1, 1]}, "std"),
    ({"crop_pct": -1}, "crop_pct"),
    ({"interpolation": "magic"}, "interpolation"),
    ("not a dict", "pretrained_cfg must be an object"),
])
def test_bad_pretrained_cfg_is_refused(folder, pretrained_cfg, needle):
    _edit_config(folder, pretrained_cfg=pretrained_cfg)
    with pytest.raises(ModelFolderError, match=needle):
        equimod_zoo.load(folder)


def test_weight_locations_in_pretrained_cfg_are_ignored(folder, tmp_path):
    _edit_config(folder, pretrained_cfg={"file": "/etc/passwd", "url": "https://example.com/x.pth",
                                         "hf_hub_id": "someone/else"})
    model = equimod_zoo.load(folder)
    assert model.pretrained_cfg["file"] == str(folder / WEIGHTS_FILE)
    assert not model.pretrained_cfg.get("url") and not model.pretrained_cfg.get("hf_hub_id")


def test_bad_config_is_one_line_at_the_command_line(folder, tmp_path):
    _edit_config(folder, architecture="hf-hub:someone/x")
    result = CliRunner().invoke(app, ["extract", "--images", str(_images(tmp_path)), "--model", str(folder),
                                      "--out", str(tmp_path / "out")])
    _one_line_exit_2(result, "config.json", "hf-hub:someone/x")


def test_missing_sha256_loads_with_a_warning_that_says_so(folder):
    config = json.loads((folder / "config.json").read_text())
    del config["equimod"]["weights_sha256"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.warns(UnverifiedWeightsWarning, match="no recorded sha256"):
        equimod_zoo.load(folder)


def test_non_finite_weights_are_refused_by_load(folder):
    state = safetensors.torch.load_file(str(folder / WEIGHTS_FILE))
    state["layer1.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    safetensors.torch.save_file(state, str(folder / WEIGHTS_FILE))
    _edit_config(folder, equimod={"weights_sha256": None})
    with pytest.warns(UnverifiedWeightsWarning), pytest.raises(WeightsIntegrityError, match="NaN or inf"):
        equimod_zoo.load(folder)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_safetensors_is_one_line(folder, tmp_path, damage):
    weights = folder / WEIGHTS_FILE
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x10\x00" * 64)
    _edit_config(folder, equimod={"weights_sha256": None})
    with pytest.warns(UnverifiedWeightsWarning), pytest.raises(ModelFolderError, match="not a readable safetensors"):
        equimod_zoo.load(folder)
    result = CliRunner().invoke(app, ["extract", "--images", str(_images(tmp_path)), "--model", str(folder),
                                      "--out", str(tmp_path / "out")])
    _one_line_exit_2(result, str(weights))


@pytest.mark.parametrize("content", [b"", b"hello world\n", b"e" * 300])
def test_empty_or_text_checkpoint_to_convert_is_one_line(tmp_path, content):
    (tmp_path / "x.pt").write_bytes(content)
    result = CliRunner().invoke(app, ["convert", str(tmp_path / "x.pt"), "--from", "torchvision",
                                      "--out", str(tmp_path / "out")])
    _one_line_exit_2(result, "x.pt")
    assert not (tmp_path / "out").exists()


def test_convert_refuses_non_finite_weights(tmp_path, tiny_resnet18_cifar):
    state = {k: v.clone() for k, v in tiny_resnet18_cifar.state_dict().items()}
    state["layer2.0.conv1.weight"][0] = float("inf")
    torch.save({"state_dict": state}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="NaN or inf"):
        convert_checkpoint(tmp_path / "x.pt", source="torchvision", out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_convert_refuses_a_checkpoint_that_inflates_past_the_limit(tmp_path, monkeypatch):
    # a few kB of zip whose one entry inflates to 64 MB: refused from the archive's directory alone
    with zipfile.ZipFile(tmp_path / "bomb.pt", "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data/0", b"\0" * (64 << 20))
    assert (tmp_path / "bomb.pt").stat().st_size < 1 << 20
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("inflated the checkpoint"))
    with pytest.raises(ValueError, match="once inflated, over the"):
        read_checkpoint(tmp_path / "bomb.pt", max_bytes=32 << 20)


def test_devices_are_checked_before_any_work(tmp_path, monkeypatch):
    with pytest.raises(DeviceError, match="not a device"):
        resolve_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device(None).type == "cpu"
    images = _images(tmp_path)
    for device, needle in (("cuda", "no CUDA GPU"), ("gpu", "not a device"), ("meta", "cpu, cuda or mps")):
        result = CliRunner().invoke(app, ["extract", "--images", str(images), "--out", str(tmp_path / device),
                                          "--device", device])
        _one_line_exit_2(result, device, needle)


def test_bad_model_args_type_at_convert_is_one_line(tmp_path, tiny_resnet18_cifar):
    torch.save({"state_dict": tiny_resnet18_cifar.state_dict()}, tmp_path / "x.pt")
    result = CliRunner().invoke(app, ["convert", str(tmp_path / "x.pt"), "--from", "torchvision", "--out",
                                      str(tmp_path / "out"), "--arch", "resnet18_cifar", "--model-args",
                                      '{"channels": "wide"}'])
    _one_line_exit_2(result, "channels")


def test_real_bugs_keep_their_traceback():
    with pytest.raises(ValueError, match="negative dimensions"):
        with user_errors():
            np.zeros(-1)
    with pytest.raises(KeyError):
        with user_errors():
            {}["missing"]
    with pytest.raises(typer.Exit):  # a deliberate raise in our code stays one line
        with user_errors():
            equimod_zoo.extract_features("anywhere", out="nowhere", batch_size=0)
    with pytest.raises(typer.Exit):
        with user_errors():
            raise UserError("--flag: bad value")


def test_an_unknown_name_is_a_key_error_and_one_plain_line(capsys):
    from equimod_zoo.training.recipe import load_recipe

    with pytest.raises(KeyError) as caught:  # code that looks names up catches it as before
        load_recipe("simclr_r18")
    assert isinstance(caught.value, UserError) and str(caught.value).startswith("unknown recipe 'simclr_r18'")
    with pytest.raises(typer.Exit):
        with user_errors():
            load_recipe("simclr_r18")
    assert capsys.readouterr().err.startswith("error: unknown recipe 'simclr_r18'")


@pytest.mark.parametrize("setting, needle", [
    ("model_args={checkpoint_path: /etc/passwd}", "'checkpoint_path' is not a constructor argument"),
    ("model_args={channels: wide}", "channels = 'wide' is not four positive integers"),
    ("arch=local-dir:/tmp", "'local-dir:/tmp' is not a registered timm architecture name"),
    ("epochs=abc", "epochs must be an integer"),
])
def test_bad_set_values_are_one_line(tmp_path, setting, needle):
    data = tmp_path / "data" / "c"
    data.mkdir(parents=True)
    for name in ("a.png", "b.png"):
        (data / name).write_bytes((_images(tmp_path) / "a.png").read_bytes())
    result = CliRunner().invoke(app, ["train", "--recipe", "simclr_r18_cifar10_cpu", "--data", str(data.parent),
                                      "--out", str(tmp_path / "run"), "--set", "batch_size=2", "--set", setting,
                                      "--max-steps", "1"])
    _one_line_exit_2(result, needle)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.parametrize("command", [
    ["transfer", "--dataset", "flowers102"],
    ["compare", "--models", "a,b", "--datasets", "flowers102", "--out", "cmp"],
    ["linear", "--train", "feats", "--test", "feats"],
    ["train", "--recipe", "simclr_r18_cifar10_cpu", "--data", "data", "--out", "run"],
])
def test_every_command_checks_its_device_first(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device, needle in (("cuda:0", "no CUDA GPU"), ("tpu", "not a device")):
        result = CliRunner().invoke(app, [*command, "--device", device])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert needle in result.output and f"--device {device!r}" in result.output
