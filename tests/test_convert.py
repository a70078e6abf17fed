"""Foreign checkpoints -> zoo model folders: every supported layout, and what is refused."""
import json

import pytest
import safetensors.torch
import timm
import torch
import torchvision

from typer.testing import CliRunner

import equimod_zoo
from equimod_zoo.cli import app
from equimod_zoo.constants import HEADS_FILE
from equimod_zoo.hub.convert import convert_checkpoint, read_checkpoint

TINY = {"channels": (8, 16, 32, 64)}  # the fixture's stem_width=8 leaves timm's plain 64-channel stem


def _features(model, size=32):
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model.eval()(x)


def _backbone_state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _heads(dim=64):
    return {"proj_head_eq.0.weight": torch.randn(16, dim), "proj_head_t.0.weight": torch.randn(8, 18),
            "predictor_eq.0.weight": torch.randn(8, 16), "proj_head_inv.0.weight": torch.randn(16, dim)}


def test_official_equimod_checkpoint_converts_backbone_heads_and_method(tmp_path, tiny_resnet18_cifar):
    model = {f"resnet.{k}": v for k, v in _backbone_state(tiny_resnet18_cifar).items()}
    model.update({"resnet.fc.weight": torch.randn(10, 64), **_heads()})
    momentum = {f"resnet.{k}": torch.zeros_like(v) for k, v in _backbone_state(tiny_resnet18_cifar).items()}
    torch.save({"model": model, "momentum_model": momentum, "epoch": 12}, tmp_path / "ckpt.pt")

    report = convert_checkpoint(tmp_path / "ckpt.pt", source="equimod-official", out=tmp_path / "out")

    assert report.arch == "resnet18_cifar" and report.model_args == TINY and report.head_keys == 4
    assert "resnet.fc.weight" in report.ignored_keys
    loaded = equimod_zoo.load(tmp_path / "out")
    torch.testing.assert_close(_features(loaded), _features(tiny_resnet18_cifar))
    heads = safetensors.torch.load_file(str(tmp_path / "out" / HEADS_FILE))
    assert set(heads) == set(_heads())
    meta = json.loads((tmp_path / "out" / "config.json").read_text())["equimod"]
    assert meta["method"] == "byol_equimod" and meta["epochs"] == 12
    assert meta["converted_from"]["format"] == "equimod-official"
    # plain timm reads the converted folder too
    plain = timm.create_model(f"local-dir:{tmp_path / 'out'}", pretrained=True)
    torch.testing.assert_close(_features(plain), _features(tiny_resnet18_cifar))


def test_solo_learn_checkpoint_in_ddp_naming(tmp_path, tiny_resnet18_cifar):
    state = {f"module.backbone.{k}": v for k, v in _backbone_state(tiny_resnet18_cifar).items()}
    state["module.momentum_backbone.conv1.weight"] = torch.zeros(8, 3, 3, 3)
    state["module.projector.0.weight"] = torch.randn(4, 64)
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "solo.ckpt")

    report = convert_checkpoint(tmp_path / "solo.ckpt", source="solo-learn", out=tmp_path / "out",
                                method="simclr")

    assert report.head_keys == 0 and len(report.ignored_keys) == 2
    assert not (tmp_path / "out" / HEADS_FILE).exists()
    torch.testing.assert_close(_features(equimod_zoo.load(tmp_path / "out")), _features(tiny_resnet18_cifar))
    assert json.loads((tmp_path / "out" / "config.json").read_text())["equimod"]["method"] == "simclr"


def test_lightly_sequential_indices_from_torchvision_resnet(tmp_path):
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18()
    backbone = torch.nn.Sequential(*list(resnet.children())[:-1])
    state = {f"model.backbone.{k}": v for k, v in backbone.state_dict().items()}
    state["model.projection_head.layers.0.weight"] = torch.randn(4, 512)
    safetensors.torch.save_file(state, str(tmp_path / "lightly.safetensors"))

    report = convert_checkpoint(tmp_path / "lightly.safetensors", source="lightly", out=tmp_path / "out")

    assert report.arch == "resnet18" and report.model_args == {}
    expected = _features(torch.nn.Sequential(backbone, torch.nn.Flatten()), size=64)
    torch.testing.assert_close(_features(equimod_zoo.load(tmp_path / "out"), size=64), expected,
                               rtol=1e-4, atol=1e-5)


def test_torchvision_bottleneck_depth_and_widths_are_detected(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model("resnet50", num_classes=5, channels=(8, 16, 32, 64))
    torch.save(source.state_dict(), tmp_path / "tv.pth")

    report = convert_checkpoint(tmp_path / "tv.pth", source="torchvision", out=tmp_path / "out",
                                dtype=torch.float16)

    assert report.arch == "resnet50"
    assert report.model_args == {"channels": (8, 16, 32, 64)}
    assert "fc.weight" in report.ignored_keys
    source.reset_classifier(0)
    torch.testing.assert_close(_features(equimod_zoo.load(tmp_path / "out"), size=64), _features(source, size=64),
                               rtol=2e-2, atol=2e-2)


def test_explicit_arch_must_fit(tmp_path, tiny_resnet18_cifar):
    torch.save(_backbone_state(tiny_resnet18_cifar), tmp_path / "tv.pth")
    unexpected = r"does not fit resnet18_cifar: 0 missing keys \[\], 6 unexpected keys \['layer1\.0\.downsample"
    with pytest.raises(ValueError, match=unexpected):
        convert_checkpoint(tmp_path / "tv.pth", source="torchvision", out=tmp_path / "out", arch="resnet18_cifar",
                           model_args={})
    assert not (tmp_path / "out").exists()


class RunsCode:
    """Unpickling this would run code: exactly what a checkpoint must never do."""

    marker = None

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def test_pickle_that_would_run_code_is_refused_and_does_not_run(tmp_path):
    RunsCode.marker = tmp_path / "ran.txt"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "payload": RunsCode()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match=r"evil\.pt: refused: .*weights_only=True"):
        read_checkpoint(tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="refused"):
        convert_checkpoint(tmp_path / "evil.pt", source="torchvision", out=tmp_path / "out")
    assert not RunsCode.marker.exists()
    assert not (tmp_path / "out").exists()


def test_partial_backbone_is_refused_listing_missing_keys(tmp_path, tiny_resnet18_cifar):
    state = {f"backbone.{k}": v for k, v in _backbone_state(tiny_resnet18_cifar).items() if not k.startswith("layer4")}
    torch.save({"state_dict": state}, tmp_path / "partial.ckpt")
    with pytest.raises(ValueError, match=r"partial\.ckpt: .*missing keys \['layer4\.0\..*refusing a partial"):
        convert_checkpoint(tmp_path / "partial.ckpt", source="solo-learn", out=tmp_path / "out",
                           arch="resnet18_cifar", model_args=TINY)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["partial.ckpt"]  # no half-written folder left behind


def test_wrong_layout_and_missing_file_are_clear_errors(tmp_path, tiny_resnet18_cifar):
    torch.save(_backbone_state(tiny_resnet18_cifar), tmp_path / "plain.pth")
    with pytest.raises(ValueError, match="no backbone keys .*'backbone.'.*--from"):
        convert_checkpoint(tmp_path / "plain.pth", source="solo-learn", out=tmp_path / "out")
    with pytest.raises(ValueError, match="--from 'keras'"):
        convert_checkpoint(tmp_path / "plain.pth", source="keras", out=tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        convert_checkpoint(tmp_path / "absent.pt", source="torchvision", out=tmp_path / "out")


def test_convert_command(tmp_path, tiny_resnet18_cifar):
    state = {f"backbone.{k}": v for k, v in _backbone_state(tiny_resnet18_cifar).items()}
    torch.save({"state_dict": state}, tmp_path / "solo.ckpt")
    result = CliRunner().invoke(app, ["convert", str(tmp_path / "solo.ckpt"), "--from", "solo-learn",
                                      "--out", str(tmp_path / "out"), "--model-args", '{"channels": [8, 16, 32, 64]}',
                                      "--method", "byol"])
    assert result.exit_code == 0, result.output
    assert "resnet18_cifar" in result.output
    torch.testing.assert_close(_features(equimod_zoo.load(tmp_path / "out")), _features(tiny_resnet18_cifar))
    result = CliRunner().invoke(app, ["convert", str(tmp_path / "solo.ckpt"), "--from", "solo-learn",
                                      "--out", str(tmp_path / "out2"), "--model-args", "[1]"])
    assert result.exit_code == 2 and "--model-args: expected a JSON object" in result.output
