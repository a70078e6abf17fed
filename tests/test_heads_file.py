"""The heads file and its schema in config.json: written at export, read back without guessing sizes.

Folders exported before the schema existed (the bundled models) still load: their sizes are
inferred once, in `HeadsSchema.infer`.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch

import equimod_zoo  # noqa: F401  (registers resnet18_cifar)
from equimod_zoo.constants import CONFIG_FILE, HEADS_FILE
from equimod_zoo.equimod.augment import PARAM_NAMES
from equimod_zoo.equimod.heads_file import (
    SCHEMA_KEY,
    HeadsSchema,
    load_equimod_heads,
    read_heads_schema,
    read_heads_state,
)
from equimod_zoo.errors import ModelFolderError
from equimod_zoo.model_folder import save_weights, write_model_folder
from equimod_zoo.training.methods import MethodConfig, build_method

TINY = dict(channels=(8, 16, 32, 64), stem_width=8)
HEADS = dict(proj_hidden=32, proj_out=16, eq_hidden=24, eq_out=12, param_embed=8, byol_proj_hidden=20,
             byol_proj_out=10, byol_pred_hidden=18)


def _export(folder, name: str, *, param_names=PARAM_NAMES, record_schema: bool = True):
    torch.manual_seed(0)
    backbone = timm.create_model("resnet18_cifar", num_classes=0, **TINY)
    method = build_method(MethodConfig(name, param_dim=len(param_names), **HEADS), backbone)
    schema = method.heads_schema(tuple(param_names) if method.equimod is not None else ())
    write_model_folder(folder, backbone, arch="resnet18_cifar", model_args=TINY, heads=method.heads_state_dict(),
                       equimod={SCHEMA_KEY: schema.to_dict()} if record_schema else {})
    return method, schema


@pytest.mark.parametrize("name", ["simclr", "byol", "simclr_equimod", "byol_equimod"])
def test_the_schema_records_every_heads_sizes_and_matches_the_file(tmp_path, name):
    method, schema = _export(tmp_path, name)
    recorded = json.loads((tmp_path / CONFIG_FILE).read_text())["equimod"][SCHEMA_KEY]
    assert recorded == schema.to_dict() and read_heads_schema(tmp_path) == schema
    assert schema.projection == ((64, 32, 32, 16) if name.startswith("simclr") else (64, 20, 10))
    assert schema.predictor == (() if name.startswith("simclr") else (10, 18, 10))
    if name.endswith("equimod"):
        assert schema.g_eq == (64, 24, 24, 12) and schema.g_t == (18, 8)
        assert schema.param_names == PARAM_NAMES
    else:
        assert schema.g_eq == schema.g_t == schema.param_names == ()
    # the legacy inference agrees with what export records
    assert HeadsSchema.infer(read_heads_state(tmp_path / HEADS_FILE), source="test") == schema


def test_equimod_heads_follow_the_recorded_parameter_names(tmp_path):
    names = PARAM_NAMES[:15]  # SimCLR's CIFAR-10 pipeline: no blur, no solarize
    method, _ = _export(tmp_path, "simclr_equimod", param_names=names)
    heads = load_equimod_heads(tmp_path)
    assert heads.param_names == names and heads.g_t.widths == (15, 8)
    y0, params = torch.randn(5, 12), torch.randn(5, 15)
    expected = method.equimod.eval().u(y0, method.equimod.g_t(params))  # mean 0, std 1
    assert torch.allclose(heads.predict(y0, params), expected, atol=1e-6)
    with pytest.raises(ValueError, match=r"params must be \(5, 15\)"):
        heads.predict(y0, torch.randn(5, 18))
    assert load_equimod_heads(tmp_path / "nothing") is None


def test_readers_build_from_the_schema_not_from_key_names(tmp_path):
    _export(tmp_path, "simclr_equimod")
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    config["equimod"][SCHEMA_KEY]["g_eq"] = [64, 30, 30, 12]  # a schema that disagrees with the tensors
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match=HEADS_FILE):
        load_equimod_heads(tmp_path)
    config["equimod"][SCHEMA_KEY] = {"method": "simclr_equimod", "projection": [64, 16]}
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match=r"equimod\.heads: heads schema: g_eq and g_t are given exactly"):
        load_equimod_heads(tmp_path)
    config["equimod"][SCHEMA_KEY] = {"method": "simclr", "projection": "64,16", "colour": "red"}
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match=r"config\.json: unknown key equimod\.heads\.colour"):
        load_equimod_heads(tmp_path)


def test_a_folder_without_a_schema_is_inferred_once(tmp_path):
    _export(tmp_path / "old", "byol_equimod", record_schema=False)
    heads = load_equimod_heads(tmp_path / "old")
    assert heads.param_names == PARAM_NAMES and heads.g_eq.widths == (64, 24, 24, 12)
    _export(tmp_path / "short", "simclr_equimod", param_names=PARAM_NAMES[:15], record_schema=False)
    with pytest.raises(ModelFolderError, match="g_t reads 15 parameters"):
        load_equimod_heads(tmp_path / "short")  # without a schema, 15 columns cannot be named
    _export(tmp_path / "plain", "simclr", record_schema=False)
    assert load_equimod_heads(tmp_path / "plain") is None
    # heads kept under a foreign checkpoint's names (convert from the authors' code): no EquiMod module of ours
    save_weights({"proj_head_eq.0.weight": torch.zeros(4, 8)}, tmp_path / "plain" / HEADS_FILE)
    assert load_equimod_heads(tmp_path / "plain") is None


BUNDLED_HEADS = sorted((Path(equimod_zoo.__file__).parent / "zoo").rglob(HEADS_FILE))


@pytest.mark.skipif(not BUNDLED_HEADS, reason="no bundled model carries a heads file")
@pytest.mark.parametrize("path", BUNDLED_HEADS, ids=lambda p: p.parent.name)
def test_the_bundled_models_heads_still_load(path):
    folder = path.parent
    schema = read_heads_schema(folder)
    assert schema.projection[0] == 512
    heads = load_equimod_heads(folder)
    if not schema.equimod:
        assert heads is None
        return
    if SCHEMA_KEY not in json.loads((folder / CONFIG_FILE).read_text())["equimod"]:
        assert schema.param_names == PARAM_NAMES  # exported before schemas: the 18-entry pipeline
    assert heads.param_names == schema.param_names
    assert heads.g_t.widths == (len(schema.param_names), 128) and heads.g_eq.widths == (512, 2048, 2048, 128)
    y0 = heads.embed(torch.randn(4, 512))
    assert heads.predict(y0, torch.zeros(4, len(schema.param_names))).shape == (4, 128)


@pytest.mark.parametrize("name", ["vicreg", "vicreg_equimod", "barlow_twins", "barlow_twins_equimod"])
def test_each_method_s_heads_are_data(tmp_path, name):
    heads = dict(HEADS, vicreg_proj_hidden=22, vicreg_proj_out=14, barlow_proj_hidden=26, barlow_proj_out=18)
    torch.manual_seed(0)
    backbone = timm.create_model("resnet18_cifar", num_classes=0, **TINY)
    method = build_method(MethodConfig(name, **heads), backbone)
    schema = method.heads_schema(PARAM_NAMES if method.equimod is not None else ())
    write_model_folder(tmp_path, backbone, arch="resnet18_cifar", model_args=TINY, heads=method.heads_state_dict(),
                       equimod={SCHEMA_KEY: schema.to_dict()})
    assert read_heads_schema(tmp_path) == schema and schema.predictor == ()
    assert schema.projection == ((64, 22, 22, 14) if name.startswith("vicreg") else (64, 26, 26, 18))
    assert {key.split(".")[0] for key in read_heads_state(tmp_path / HEADS_FILE)} >= {"projection"}
    heads_module = load_equimod_heads(tmp_path)
    assert (heads_module is not None) == name.endswith("_equimod")
    with pytest.raises(ValueError, match=f"{name} has the heads projection, the schema gives projection, predictor"):
        HeadsSchema(**{**schema.__dict__, "predictor": (14, 8, 14)})
    with pytest.raises(ValueError, match="unknown method 'swav'"):
        HeadsSchema(method="swav", projection=(64, 8))
