"""Augmentation-sensitivity probes: planted dependences are found, the report keeps its schema, the CLI runs."""
from __future__ import annotations

import json

import pytest
import timm
import torch
from PIL import Image
from typer.testing import CliRunner

import equimod_zoo  # noqa: F401  (registers resnet18_cifar)
from equimod_zoo.cli import app
from equimod_zoo.model_folder import ModelConfig, default_pretrained_cfg, write_model_folder
from equimod_zoo.equimod.heads_file import load_equimod_heads
from equimod_zoo.model_metadata import ModelMetadata
from equimod_zoo.sensitivity.equivariance import equivariance_metrics
from equimod_zoo.sensitivity.probes import BALANCED_ACCURACY, R2, metric_of, probe_parameters, split_images
from equimod_zoo.sensitivity.run import REPORT_KEYS, SCORE_KEYS
from equimod_zoo.sensitivity.sampling import probe_augmentation
from equimod_zoo.equimod.augment import BINARY_PARAMS, PARAM_NAMES, AugmentConfig, BatchedAugment
from equimod_zoo.training.methods import MethodConfig, build_method
from equimod_zoo.training.recipe import load_recipe
from equimod_zoo.transfer.compare import write_probe_comparison

TINY = dict(channels=(8, 16, 32, 64), stem_width=8)



def _sampled_params(num_images: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two views per image, as the probe samples them: [2N, 18] params and [2N] image indices."""
    augment, generator = BatchedAugment(), torch.Generator().manual_seed(seed)
    params = torch.cat([augment.sample(num_images, view=v, image_size=(32, 32), generator=generator) for v in (0, 1)])
    return params, torch.arange(num_images).repeat(2)


@pytest.mark.parametrize("planted", ["hue", "flip"])
def test_probe_finds_a_planted_linear_dependence_and_nothing_else(planted):
    num_images = 300
    params, image = _sampled_params(num_images)
    generator = torch.Generator().manual_seed(1)
    target = params[:, PARAM_NAMES.index(planted)]
    features = torch.randn(len(params), 24, generator=generator)
    features[:, 0] += 4 * (target - target.mean()) / target.std()
    features = features @ torch.randn(24, 24, generator=generator)  # spread it over every feature
    scores = probe_parameters(features, params, image, split_images(num_images, seed=0), num_bootstrap=200)

    assert list(scores) == list(PARAM_NAMES)
    found = scores[planted]
    assert found.value > 0.9 and found.ci_low > 0.8
    for name, score in scores.items():
        if name == planted:
            continue
        if score.metric == R2:
            assert score.value < 0.1, (name, score)
        else:  # chance is 0.5, and inside the interval
            assert score.value < 0.65 and score.ci_low <= 0.5, (name, score)


def test_every_parameter_has_its_metric():
    assert {metric_of(name) for name in BINARY_PARAMS} == {BALANCED_ACCURACY}
    assert {metric_of(name) for name in PARAM_NAMES if name not in BINARY_PARAMS} == {R2}
    assert set(BINARY_PARAMS) == {"flip", "jitter_applied", "grayscale", "blur_applied", "solarize"}
    with pytest.raises(KeyError, match="unknown augmentation parameter"):
        metric_of("rotation")


def test_a_constant_parameter_scores_none_not_a_number():
    num_images = 60
    params, image = _sampled_params(num_images)
    params[:, PARAM_NAMES.index("solarize")] = 0  # e.g. only view 1 sampled
    params[:, PARAM_NAMES.index("hue")] = 0
    scores = probe_parameters(torch.randn(len(params), 8), params, image, split_images(num_images), num_bootstrap=20)
    assert scores["solarize"].value is None and scores["hue"].value is None
    assert scores["flip"].value is not None


def test_splits_are_disjoint_by_image_and_refuse_too_few_images():
    splits = split_images(100, seed=3)
    parts = [set(splits.train.tolist()), set(splits.val.tolist()), set(splits.test.tolist())]
    assert sum(map(len, parts)) == 100 and len(set.union(*parts)) == 100
    assert (len(parts[1]), len(parts[2])) == (20, 20)
    with pytest.raises(ValueError, match="num_images"):
        split_images(6)


def _heads_model(folder, *, equimod: bool):
    torch.manual_seed(0)
    backbone = timm.create_model("resnet18_cifar", num_classes=0, **TINY)
    method = build_method(MethodConfig("simclr_equimod" if equimod else "simclr", eq_hidden=32, eq_out=16,
                                       param_embed=8, proj_hidden=32, proj_out=16), backbone)
    write_model_folder(folder, backbone, arch="resnet18_cifar", model_args=TINY, heads=method.heads_state_dict())
    return method


def test_equimod_heads_load_and_an_invariant_predictor_scores_the_invariant_baseline(tmp_path):
    assert load_equimod_heads(tmp_path) is None  # no heads file
    _heads_model(tmp_path / "simclr", equimod=False)
    assert load_equimod_heads(tmp_path / "simclr") is None  # heads, but no EquiMod module
    method = _heads_model(tmp_path / "equimod", equimod=True)
    heads = load_equimod_heads(tmp_path / "equimod")
    features = torch.randn(10, 64)
    assert torch.allclose(heads.embed(features), method.equimod.g_eq.eval()(features), atol=1e-6)

    # u = [I, 0]: y_hat_t = y0 (BN eval with running stats 0/1), so it is exactly the invariant model
    with torch.no_grad():
        heads.u.layers[0].weight.zero_()
        heads.u.layers[0].weight[:, :16] = torch.eye(16)
    params, image = _sampled_params(20)
    original, view = torch.randn(20, 64), torch.randn(40, 64)
    metrics = equivariance_metrics(heads, original, view, params, image, batch_size=16)
    assert abs(metrics["eq_gain"]) < 1e-4
    assert metrics["retrieval_top1"] == metrics["retrieval_top1_invariant"]
    assert metrics["num_samples"] == 40
    # views that are their originals: y_t = y0, retrieval of y0 is perfect
    same = equivariance_metrics(heads, original, original[image[:20]], params[:20], image[:20], batch_size=8)
    assert same["cos_invariant"] == pytest.approx(1.0, abs=1e-5) and same["retrieval_top1_invariant"] == 1.0


def test_probe_augmentation_follows_the_models_training_recipe():
    recipe = load_recipe("simclr_equimod_r18_cifar10")
    config = ModelConfig("resnet18_cifar", 512, default_pretrained_cfg("resnet18_cifar"),
                         equimod=ModelMetadata(recipe_config=recipe.to_dict()))
    augmentation = probe_augmentation(config, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert augmentation.augment.config.views == recipe.augment.views
    assert augmentation.augment.config.crop_scale == recipe.augment.crop_scale
    assert augmentation.source_size == recipe.data_size and augmentation.resolution == recipe.augment.size
    assert augmentation.augment.config.mean == (0.5, 0.5, 0.5)
    plain = probe_augmentation(ModelConfig("resnet18_cifar", 512, {"input_size": (3, 32, 32)}), resolution=24,
                               mean=(0.5,) * 3, std=(0.25,) * 3)
    assert plain.resolution == 24 and plain.source_size == 24
    assert plain.augment.config.views == AugmentConfig().views


@pytest.fixture
def tiny_parquet(tmp_path):
    import datasets

    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (40, 16, 16, 3), dtype=torch.uint8, generator=generator)
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    data = datasets.Dataset.from_dict({"img": [Image.fromarray(p.numpy()) for p in pixels],
                                       "label": [i % 2 for i in range(40)]}, features=features)
    folder = tmp_path / "tiny-data"
    folder.mkdir()
    data.to_parquet(str(folder / "test.parquet"))
    return folder


def test_cli_end_to_end_with_a_model_folder_and_a_parquet_dataset(tmp_path, tiny_parquet):
    _heads_model(tmp_path / "equimod", equimod=True)
    _heads_model(tmp_path / "simclr", equimod=False)
    runner = CliRunner()
    common = ["--dataset", "tiny", "--data-dir", str(tiny_parquet), "--num-images", "30", "--resolution", "16",
              "--bootstrap", "20", "--batch-size", "16", "--device", "cpu"]

    result = runner.invoke(app, ["probe-augs", "--model", str(tmp_path / "equimod"), *common,
                                 "--json", str(tmp_path / "one.json"), "--plot", str(tmp_path / "one.png")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "one.json").read_text())
    assert tuple(report) == REPORT_KEYS
    assert report["num_images"] == 30 and report["num_samples"] == 60 and report["resolution"] == 16
    assert report["weights_sha256"] == ModelConfig.read(tmp_path / "equimod").equimod.weights_sha256
    assert list(report["inputs"]) == ["view", "pair"]
    for scores in report["inputs"].values():
        assert list(scores) == list(PARAM_NAMES)
        for name, score in scores.items():
            assert tuple(score) == SCORE_KEYS and score["metric"] == metric_of(name)
    assert set(report["equivariance"]) >= {"eq_gain", "retrieval_top1", "retrieval_top1_invariant"}
    with Image.open(tmp_path / "one.png") as plot:
        assert plot.size[0] > 500 and plot.size[1] > 300

    result = runner.invoke(app, ["probe-augs", "--models", f"{tmp_path / 'equimod'},{tmp_path / 'simclr'}", *common,
                                 "--views", "2", "--json", str(tmp_path / "two.json"), "--plot", str(tmp_path / "two.png")])
    assert result.exit_code == 0, result.output
    reports = json.loads((tmp_path / "two.json").read_text())
    assert [tuple(r) for r in reports] == [REPORT_KEYS] * 2
    assert reports[0]["views"] == [1] and reports[1]["equivariance"] is None
    with Image.open(tmp_path / "two.png") as plot:
        plot.verify()

    # compare's probe section reads these files back: one row per parameter, one column per model
    table, png = write_probe_comparison([tmp_path / "one.json", tmp_path / "two.json"], tmp_path / "cmp")
    lines = table.read_text().splitlines()
    assert sum(line.startswith("| hue | r2 |") for line in lines) == 2  # view and pair sections
    assert lines[2].count("`") == 6  # three reports: one, then the two of two.json
    with Image.open(png) as plot:
        plot.verify()
    with pytest.raises(ValueError, match="not a probe-augs report"):
        (tmp_path / "bad.json").write_text("{}")
        write_probe_comparison([tmp_path / "bad.json"], tmp_path / "cmp")


def test_cli_refuses_bad_arguments_in_one_line(tmp_path, tiny_parquet):
    runner = CliRunner()
    result = runner.invoke(app, ["probe-augs", "--dataset", "tiny"])
    assert result.exit_code == 2 and "exactly one of --model" in result.output
    result = runner.invoke(app, ["probe-augs", "--model", str(tmp_path / "missing"), "--data-dir", str(tiny_parquet)])
    assert result.exit_code == 2 and "error:" in result.output
    _heads_model(tmp_path / "m", equimod=False)
    result = runner.invoke(app, ["probe-augs", "--model", str(tmp_path / "m"), "--data-dir", str(tiny_parquet),
                                 "--num-images", "1000"])
    assert result.exit_code == 2 and "num_images" in result.output


def test_probe_runs_on_the_shared_cifar10_parquet(tmp_path, shared_data):
    from equimod_zoo.sensitivity.run import probe_augmentations

    _heads_model(tmp_path / "m", equimod=True)
    report = probe_augmentations("cifar10", model=tmp_path / "m", data_dir=shared_data / "cifar10-jpeg",
                                 num_images=40, num_bootstrap=20, batch_size=40, device="cpu")
    assert report["resolution"] == 32 and report["source_size"] == 32 and report["num_samples"] == 80
    assert report["equivariance"]["num_samples"] == 80
    assert all(score["metric"] == metric_of(name) for name, score in report["inputs"]["pair"].items())
