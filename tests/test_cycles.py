"""Warm-restart cycles: `--init-from` starts exactly from the source model, records its history, and
refuses a model it cannot continue."""
from __future__ import annotations

import json

import pytest
import safetensors.torch
import torch
from typer.testing import CliRunner

from equimod_zoo.cli import app
from equimod_zoo.constants import HEADS_FILE
from equimod_zoo.equimod.augment import PARAM_NAMES
from equimod_zoo.training.distributed import setup_distributed
from equimod_zoo.training.trainer import _Trainer, train
from toy_training import tiny_recipe, write_toy_parquet


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    return write_toy_parquet(tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="module")
def source(toy_data, tmp_path_factory):
    """A BYOL+EquiMod model trained for one epoch (4 steps): backbone, heads, target, statistics."""
    out = tmp_path_factory.mktemp("source") / "run"
    train(tiny_recipe("byol_equimod", epochs=1, precision="fp32"), data=toy_data, out=out,
          cache_dir=out.parent / "cache", progress=False)
    return out


def meta(folder):
    return json.loads((folder / "model" / "config.json").read_text())["equimod"]  # a run's exported model


def test_a_new_cycle_starts_from_exactly_the_source_weights(source, toy_data, tmp_path):
    recipe = tiny_recipe("byol_equimod", epochs=1, precision="fp32", seed=3)
    trainer = _Trainer(recipe, info=setup_distributed(device="cpu"), data=toy_data, out=tmp_path / "next",
                       max_steps=1, resume=False, overrides={}, cache_dir=tmp_path / "cache", data_limit=None,
                       progress=False, init_from=source)
    method = trainer.method
    backbone = safetensors.torch.load_file(source / "model" / "model.safetensors")
    heads = safetensors.torch.load_file(source / "model" / HEADS_FILE)
    assert all(torch.equal(method.backbone.state_dict()[k], v) for k, v in backbone.items())
    assert all(torch.equal(value, heads[key]) for key, value in method.heads_state_dict().items())
    # BYOL's target starts as the online network, not as the source run's target.
    assert all(torch.equal(a, b) for a, b in zip(method.target_backbone.state_dict().values(),
                                                 method.backbone.state_dict().values()))
    assert all(state == {} for state in trainer.optimizer.state.values())  # fresh optimiser

    # The source model's loss on the first batch of the new cycle, with the same views...
    from equimod_zoo.training.methods import build_method
    reference = build_method(recipe.method, _fresh_backbone(recipe), param_mean=heads["param_mean"],
                             param_std=heads["param_std"])
    reference.backbone.load_state_dict(backbone)
    from equimod_zoo.training.cycles import initialise_from, load_source
    initialise_from(reference, load_source(source, recipe))
    images = next(trainer.loader.epoch(0, start_step=0))
    generator = torch.Generator().manual_seed(0)
    generator.set_state(trainer.generator.get_state())
    x1, p1 = trainer.augment(images, view=0, generator=generator)
    x2, p2 = trainer.augment(images, view=1, generator=generator)
    expected = reference.train()(x1, x2, x0=trainer.augment.identity(images), p1=p1, p2=p2).loss
    # ... equals the new cycle's first logged loss.
    trainer.run()
    first = float((tmp_path / "next" / "log.csv").read_text().splitlines()[1].split(",")[3])
    assert first == pytest.approx(float(expected), rel=1e-6)


def _fresh_backbone(recipe):
    from equimod_zoo.training.export import build_backbone
    return build_backbone(recipe)


def test_the_cycle_record_adds_up(source, toy_data, tmp_path):
    out = tmp_path / "second"
    result = train(tiny_recipe("byol_equimod", epochs=2, precision="fp32"), data=toy_data, out=out,
                   init_from=source, cache_dir=tmp_path / "cache", progress=False)
    assert result.finished and result.step == 8
    first, second = meta(source), meta(out)
    assert len(first["cycles"]) == 1 and first["cycles"][0]["init_from_sha256"] is None
    cycles = second["cycles"]
    assert len(cycles) == 2 and cycles[0] == first["cycles"][0]
    assert cycles[1]["init_from_sha256"] == first["weights_sha256"]
    assert (cycles[1]["epochs"], cycles[1]["steps"], cycles[1]["hardware"]) == (2, 8, "cpu")
    assert cycles[1]["seconds_per_epoch"] > 0
    assert second["epochs"] == sum(c["epochs"] for c in cycles) == 3
    assert second["steps"] == sum(c["steps"] for c in cycles) == 12
    # A third cycle from the second carries both before it.
    third = train(tiny_recipe("byol_equimod", epochs=1, precision="fp32"), data=toy_data, out=tmp_path / "third",
                  init_from=out, cache_dir=tmp_path / "cache", progress=False)
    assert third.finished and [c["epochs"] for c in meta(tmp_path / "third")["cycles"]] == [1, 2, 1]


def test_resume_of_a_continued_run_keeps_its_history(source, toy_data, tmp_path):
    out = tmp_path / "continued"
    recipe = tiny_recipe("byol_equimod", epochs=2, precision="fp32")
    train(recipe, data=toy_data, out=out, init_from=source, max_steps=3, cache_dir=tmp_path / "cache", progress=False)
    resumed = train(None, data=toy_data, out=out, resume=True, cache_dir=tmp_path / "cache", progress=False)
    assert resumed.finished and [c["init_from_sha256"] for c in meta(out)["cycles"]] == [
        None, meta(source)["weights_sha256"]]
    assert meta(out)["epochs"] == 3


@pytest.mark.parametrize(("recipe", "overrides", "message"), [
    ("simclr_equimod", {}, "a byol_equimod model; recipe simclr_equimod_r18_cifar10 trains simclr_equimod"),
    ("byol_equimod", {"model_args": {"channels": [16, 32, 64, 128], "stem_width": 16}}, "architecture"),
    ("byol_equimod", {"method.param_embed": 8}, "head g_t.layers.0.weight is (16, 18), the recipe's is (8, 18)"),
    ("byol_equimod", {"augment.views": [{"blur_p": 1.0, "solarize_p": 0.0}, {"blur_p": 0.1, "solarize_p": 0.0}],
                      "augment.params": [p for p in PARAM_NAMES if p != "solarize"]},
     "on another augmentation parameter list"),
])
def test_init_from_refuses_a_model_it_cannot_continue(source, toy_data, tmp_path, recipe, overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        train(tiny_recipe(recipe, **overrides), data=toy_data, out=tmp_path / "x", init_from=source,
              cache_dir=tmp_path / "cache", progress=False)
    assert not (tmp_path / "x").exists()


def test_cli_refuses_in_one_line_a_model_without_heads_or_of_another_parameter_list(source, toy_data, tmp_path):
    import shutil

    import yaml
    headless = tmp_path / "headless"
    shutil.copytree(source, headless)
    (headless / "model" / HEADS_FILE).unlink()
    recipe = tiny_recipe("byol_equimod").to_dict()
    recipe.pop("name")
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(recipe))
    base = ["train", "--recipe", str(tmp_path / "toy.yaml"), "--data", str(toy_data), "--out", str(tmp_path / "x"),
            "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]
    result = CliRunner().invoke(app, [*base, "--init-from", str(headless)])
    assert result.exit_code == 2 and "no equimod_heads.safetensors" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    # Another augmentation parameter list: g_t's input width differs.
    recipe["augment"]["views"] = [{"blur_p": 1.0, "solarize_p": 0.0}, {"blur_p": 0.1, "solarize_p": 0.0}]
    recipe["augment"]["params"] = [p for p in recipe["augment"]["params"] if p != "solarize"]
    recipe["method"]["param_dim"] = len(recipe["augment"]["params"])
    (tmp_path / "toy15.yaml").write_text(yaml.safe_dump(recipe))
    result = CliRunner().invoke(app, [*base[:2], str(tmp_path / "toy15.yaml"), *base[3:], "--init-from", str(source)])
    assert result.exit_code == 2 and "on another augmentation parameter list" in result.output, result.output
    both = CliRunner().invoke(app, [*base, "--init-from", str(source), "--resume"])
    assert both.exit_code == 2 and "give one of them" in both.output
