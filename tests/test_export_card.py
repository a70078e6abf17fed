"""Export to timm's Hub layout: plain-timm round trip, the config schema, the card and its checks."""
import json
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
import yaml
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results

import equimod_zoo
from equimod_zoo.constants import HEADS_FILE, WEIGHTS_FILE
from equimod_zoo.equimod.heads_file import SCHEMA_KEY
from equimod_zoo.hub.export import export_model, verify_reload
from equimod_zoo.hub.model_cards import card_summary
from equimod_zoo.model_folder import sha256_file, write_model_folder
from equimod_zoo.records import Record, add_records, read_records

TINY = {"channels": (8, 16, 32, 64), "stem_width": 8}
LINEAR_COMMAND = "equimod-zoo linear RUN --dataset cifar10 --data-dir ../shared/data"


def records_dir(folder: Path) -> Path:
    """Where `make_run_folder` records the run's numbers: a records folder beside it, never inside."""
    return folder.parent / "records"


def make_run_folder(folder: Path, model: torch.nn.Module, *, epochs: int = 3, results: bool = True,
                    dtype: torch.dtype | None = None, method: str = "simclr_equimod") -> str:
    """A folder like `equimod-zoo train` writes (contract 2), with a linear and a kNN result recorded in
    `records_dir(folder)`."""
    config = write_model_folder(
        folder, model, arch="resnet18_cifar", model_args=TINY, dtype=dtype,
        heads={"proj_head_eq.0.weight": torch.randn(16, 64), "param_mean": torch.zeros(18),
               "param_std": torch.ones(18)},
        equimod={"method": method, "recipe": "simclr_equimod_r18_cifar10", "epochs": epochs, "batch_size": 64,
                 "seed": 0, "source_commit": "0123abcd",
                 "compute": {"hardware": "1x NVIDIA H100 80GB HBM3", "train_seconds": 15.3, "seconds_per_epoch": 5.1},
                 "data": {"name": "cifar10", "description": "CIFAR-10 train split, JPEG re-encoding (quality 75)",
                          "num_images": 50000, "sha256": "ab" * 32}},
    )
    sha = config.equimod.weights_sha256
    (folder / "log.csv").write_text("step,epoch,lr,loss,loss_inv,loss_eq,eq_gain\n10,0,0.1,5.5,3.0,2.5,0.01\n"
                                    "20,1,0.1,5.123456,3.0,2.123,0.052\n")
    (folder / "recipe.yaml").write_text(f"method: {method}\nepochs: {epochs}\nbatch_size: 64\n")
    if results:
        add_records(records_dir(folder), [
            Record(sha, "cifar10", "test", "linear", "top1", 41.2345, LINEAR_COMMAND, "2026-12-01", "0.1.0"),
            Record(sha, "cifar10", "test", "knn", "knn_top1", 38.5, "equimod-zoo knn RUN", "2026-12-01", "0.1.0")])
    return sha


@pytest.fixture
def run(tmp_path, tiny_resnet18_cifar):
    make_run_folder(tmp_path / "run", tiny_resnet18_cifar)
    return tmp_path / "run"


def _batch():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def test_round_trip_plain_timm_gives_the_source_features(run, tmp_path, tiny_resnet18_cifar):
    result = export_model(run, tmp_path / "out", repo_id="equimod-zoo/tiny-r18", records_dirs=[records_dir(run)])
    out = tmp_path / "out"
    # a re-export of the export still carries the training record
    export_model(out, tmp_path / "again", repo_id="equimod-zoo/tiny-r18")
    assert (tmp_path / "again" / "recipe.yaml").read_text() == (run / "recipe.yaml").read_text()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["README.md", "config.json", HEADS_FILE, WEIGHTS_FILE, "recipe.yaml", "log.csv"])
    # unchanged dtype: the very same bytes, so the recorded results stay valid
    assert result.weights_sha256 == sha256_file(run / WEIGHTS_FILE) == sha256_file(out / WEIGHTS_FILE)
    plain = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    with torch.no_grad():
        x = _batch()
        torch.testing.assert_close(plain.forward_head(plain.forward_features(x), pre_logits=True),
                                   tiny_resnet18_cifar(x))
    assert tuple(timm.data.resolve_model_data_config(plain)["mean"]) == (0.4914, 0.4822, 0.4465)
    with torch.no_grad():
        torch.testing.assert_close(equimod_zoo.load(out).eval()(x), tiny_resnet18_cifar(x))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left behind


def test_config_is_timm_schema_with_equimod_metadata_at_top_level(run, tmp_path):
    export_model(run, tmp_path / "out", repo_id="equimod-zoo/tiny-r18", records_dirs=[records_dir(run)])
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["architecture"] == "resnet18_cifar" and config["num_classes"] == 0
    assert config["num_features"] == 64 and config["global_pool"] == "avg"
    assert config["model_args"] == {"channels": [8, 16, 32, 64], "stem_width": 8}
    cfg = config["pretrained_cfg"]
    assert cfg["mean"] == [0.4914, 0.4822, 0.4465] and cfg["std"] == [0.247, 0.2435, 0.2616]
    assert cfg["input_size"] == [3, 32, 32] and cfg["interpolation"] == "bicubic"
    assert cfg["crop_pct"] == 1.0 and cfg["crop_mode"] == "center"
    assert cfg["license"] == "apache-2.0" and cfg["paper_ids"] == "arXiv:2211.01244" and cfg["num_classes"] == 0
    assert "equimod" not in cfg and "file" not in cfg
    meta = config["equimod"]
    assert meta["method"] == "simclr_equimod" and meta["epochs"] == 3 and meta["batch_size"] == 64
    assert meta["weights_sha256"] == sha256_file(tmp_path / "out" / WEIGHTS_FILE)
    # the numbers stay in the records, keyed by the weights' sha256; the folder is marked as an export and,
    # unpublished, names no Hub repository
    assert "results" not in meta and "hf_hub_id" not in meta and meta["written_by"] == "export"
    assert {(r.metric, r.value) for r in read_records(records_dir(run), meta["weights_sha256"])} == {
        ("top1", 41.2345), ("knn_top1", 38.5)}


def test_card_front_matter_and_model_index_parse(run, tmp_path):
    export_model(run, tmp_path / "out", repo_id="equimod-zoo/tiny-r18", records_dirs=[records_dir(run)])
    readme = tmp_path / "out" / "README.md"
    front = _front_matter(readme.read_text())
    assert front["library_name"] == "timm" and front["pipeline_tag"] == "image-feature-extraction"
    assert front["license"] == "apache-2.0" and front["datasets"] == ["uoft-cs/cifar10"]
    assert {"image-feature-extraction", "timm", "self-supervised", "equimod", "simclr"} <= set(front["tags"])
    index = front["model-index"]
    assert index[0]["name"] == "equimod-zoo/tiny-r18"
    for result in index[0]["results"]:
        assert {"type", "name"} <= set(result["task"])
        assert {"type", "name", "split"} <= set(result["dataset"])
        assert all({"type", "value", "name"} <= set(m) for m in result["metrics"])
    name, evals = model_index_to_eval_results(index)
    assert name == "equimod-zoo/tiny-r18"
    card = ModelCard.load(readme)
    assert card.data.library_name == "timm" and card.data.pipeline_tag == "image-feature-extraction"
    values = {(e.dataset_type, e.dataset_split, e.metric_type, e.metric_value) for e in card.data.eval_results}
    assert values == {("uoft-cs/cifar10", "test", "accuracy", 41.2345), ("uoft-cs/cifar10", "test", "accuracy", 38.5)}
    assert {e.metric_value for e in evals} == {41.2345, 38.5}


def test_card_sections_state_commands_provenance_and_limitations(run, tmp_path):
    export_model(run, tmp_path / "out", repo_id="equimod-zoo/tiny-r18", records_dirs=[records_dir(run)],
                 published=True)
    text = (tmp_path / "out" / "README.md").read_text()
    for heading in ("## Model details", "## Usage", "## Training recipe", "## Evaluation", "## Provenance",
                    "## Limitations", "## Citation"):
        assert heading in text
    assert f"| 41.23 | `{LINEAR_COMMAND}` |" in text  # each number beside its command
    assert 'timm.create_model("hf-hub:equimod-zoo/tiny-r18", pretrained=True)' in text
    assert "import equimod_zoo  # registers the CIFAR-stem" in text
    assert "resolve_model_data_config" in text and "create_transform" in text
    assert "forward_head(model.forward_features(x), pre_logits=True)" in text
    assert "Trained for 3 epochs, 0.4% of the paper's 800-epoch schedule" in text
    assert "JPEG re-encoding" in text and "92.79" in text  # the paper's figure, labelled as such
    assert sha256_file(tmp_path / "out" / WEIGHTS_FILE) in text and "0123abcd" in text and "ab" * 32 in text
    assert "author    = {Devillers, Alexandre and Lefort, Mathieu}" in text
    assert "loss 5.123" in text and "eq_gain 0.052" in text  # the run's final log row
    assert "5.10 s per epoch on 1x NVIDIA H100 80GB HBM3" in text
    assert "3 epochs" in card_summary(text) and "41.23%" in card_summary(text)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["equimod"]["hf_hub_id"] == "equimod-zoo/tiny-r18"


def test_unpublished_card_never_shows_hf_hub_usage(run, tmp_path):
    export_model(run, tmp_path / "out", repo_id="equimod-zoo/tiny-r18", records_dirs=[records_dir(run)])
    text = (tmp_path / "out" / "README.md").read_text()
    assert "hf-hub:" not in text and "snapshot_download" not in text
    assert 'timm.create_model("local-dir:PATH/TO/THIS/FOLDER", pretrained=True)' in text
    assert "`equimod-zoo/tiny-r18` is not published on the Hugging Face Hub yet" in text


def test_export_without_results_has_no_model_index_and_says_so(tmp_path, tiny_resnet18_cifar):
    make_run_folder(tmp_path / "run", tiny_resnet18_cifar, results=False)
    export_model(tmp_path / "run", tmp_path / "out", repo_id="org/none")
    text = (tmp_path / "out" / "README.md").read_text()
    assert "model-index" not in _front_matter(text)
    assert "No evaluation has been recorded for these weights yet" in text
    assert ModelCard.load(tmp_path / "out" / "README.md").data.eval_results is None


def test_metric_for_other_weights_is_refused_and_nothing_is_written(run, tmp_path):
    # a records file whose numbers belong to other weights than its name says is refused, not shown
    path = next(records_dir(run).glob("*.json"))
    data = json.loads(path.read_text())
    data["weights_sha256"] = "0" * 64
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"holds records of weights 0{64}, not of the weights its name says"):
        export_model(run, tmp_path / "out", repo_id="org/tiny", records_dirs=[records_dir(run)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["records", "run"]


def test_results_written_into_an_old_model_folder_are_not_dropped_silently(run, tmp_path):
    config = json.loads((run / "config.json").read_text())
    config["equimod"]["results"] = [{"name": "top1", "dataset": "cifar10", "protocol": "linear", "value": 1.0,
                                     "command": "x", "weights_sha256": config["equimod"]["weights_sha256"]}]
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="equimod.results written into the model folder.*--record DIR"):
        export_model(run, tmp_path / "out", repo_id="org/tiny")
    assert not (tmp_path / "out").exists()


def test_fp16_export_keeps_features_but_not_results_of_the_fp32_weights(run, tmp_path, tiny_resnet18_cifar):
    # numbers are keyed by the weights' sha256: re-saved weights carry none of the fp32 weights' numbers
    export_model(run, tmp_path / "half", repo_id="org/tiny", dtype="fp16", records_dirs=[records_dir(run)])
    text = (tmp_path / "half" / "README.md").read_text()
    assert "41.23" not in text and "No evaluation has been recorded for these weights yet" in text
    make_run_folder(tmp_path / "bare", tiny_resnet18_cifar, results=False)
    result = export_model(tmp_path / "bare", tmp_path / "out", repo_id="org/tiny", dtype="fp16", with_heads=False)
    assert result.weights_dtype == "float16" and not (tmp_path / "out" / HEADS_FILE).exists()
    with safetensors.safe_open(str(tmp_path / "out" / WEIGHTS_FILE), "pt") as handle:
        assert handle.get_tensor("conv1.weight").dtype == torch.float16
    plain = timm.create_model(f"local-dir:{tmp_path / 'out'}", pretrained=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(_batch()), tiny_resnet18_cifar(_batch()), rtol=2e-2, atol=2e-2)


def test_heads_schema_travels_only_with_the_heads_file(run, tmp_path):
    config = json.loads((run / "config.json").read_text())
    config["equimod"][SCHEMA_KEY] = {"method": "simclr", "projection": [64, 16]}
    (run / "config.json").write_text(json.dumps(config))
    export_model(run, tmp_path / "with", repo_id="org/tiny")
    export_model(run, tmp_path / "without", repo_id="org/tiny", with_heads=False)
    with_heads, without = (json.loads((tmp_path / name / "config.json").read_text())["equimod"]
                           for name in ("with", "without"))
    assert with_heads[SCHEMA_KEY] == config["equimod"][SCHEMA_KEY]
    assert SCHEMA_KEY not in without and not (tmp_path / "without" / HEADS_FILE).exists()


def test_fp16_source_stays_fp16(tmp_path, tiny_resnet18_cifar):
    sha = make_run_folder(tmp_path / "run", tiny_resnet18_cifar, dtype=torch.float16)
    result = export_model(tmp_path / "run", tmp_path / "out", repo_id="org/tiny")
    assert result.weights_dtype == "float16" and result.weights_sha256 == sha


def test_existing_out_needs_overwrite_and_is_replaced_whole(run, tmp_path):
    export_model(run, tmp_path / "out", repo_id="org/tiny")
    assert (tmp_path / "out" / HEADS_FILE).is_file()
    with pytest.raises(ValueError, match="already exists.*--overwrite"):
        export_model(run, tmp_path / "out", repo_id="org/tiny", with_heads=False)
    export_model(run, tmp_path / "out", repo_id="org/tiny", with_heads=False, overwrite=True)
    # replaced whole: the heads of the previous export do not linger
    assert not (tmp_path / "out" / HEADS_FILE).exists() and (tmp_path / "out" / WEIGHTS_FILE).is_file()
    # a folder of someone else's files is never replaced (tests/test_hostile_outputs.py has more)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "old.txt").write_text("old")
    with pytest.raises(ValueError, match="not a previous export output"):
        export_model(run, tmp_path / "mine", repo_id="org/tiny", overwrite=True)
    assert (tmp_path / "mine" / "old.txt").read_text() == "old"


def test_reload_check_catches_other_weights(run, tmp_path):
    torch.manual_seed(1)
    other = timm.create_model("resnet18_cifar", num_classes=0, **TINY)
    write_model_folder(tmp_path / "other", other, arch="resnet18_cifar", model_args=TINY)
    with pytest.raises(ValueError, match="plain timm's reload gives other features than the source model"):
        verify_reload(tmp_path / "other", run, weights_dtype=torch.float32)


def _probe_report(sha: str) -> dict:
    """A report as `equimod-zoo probe-augs --json` writes it (equimod_zoo.sensitivity.run)."""
    def score(metric, value):
        return {"metric": metric, "value": value, "ci_low": value - 0.05, "ci_high": value + 0.05}
    return {"model": "run", "weights_sha256": sha, "dataset": "cifar10", "split": "test", "num_images": 200,
            "seed": 0, "inputs": {"view": {"brightness": score("r2", 0.4123), "flip": score("balanced_accuracy", 0.6)},
                                  "pair": {"brightness": score("r2", 0.5), "flip": score("balanced_accuracy", 0.7)}},
            "equivariance": {"eq_gain": 0.125, "retrieval_top1": 0.5}}


def test_probe_summary_is_embedded_and_must_match_the_weights(run, tmp_path):
    sha = sha256_file(run / WEIGHTS_FILE)
    other = {**_probe_report("1" * 64), "model": "other"}
    (run / "probe_augs.json").write_text(json.dumps([other, _probe_report(sha)]))  # a comparison list
    export_model(run, tmp_path / "out", repo_id="org/tiny")
    text = (tmp_path / "out" / "README.md").read_text()
    assert "## Augmentation probes" in text
    assert "| brightness | r2 | 0.412 [0.362, 0.462] | 0.5 [0.45, 0.55] |" in text
    assert "| flip | balanced_accuracy | 0.6 [0.55, 0.65] | 0.7 [0.65, 0.75] |" in text
    assert "eq_gain 0.125" in text and "dataset cifar10, split test, num_images 200, seed 0" in text
    # the report records its options, so the card spells out the command that reproduces it
    assert ("Measured by `equimod-zoo probe-augs --model org/tiny --dataset cifar10 --split test --num-images 200 "
            "--seed 0 --data-dir DATA_DIR`") in text
    assert json.loads((tmp_path / "out" / "probe_augs.json").read_text())["weights_sha256"] == sha
    (run / "probe_augs.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match="probe_augs.json: measured on weights 1{64}"):
        export_model(run, tmp_path / "out2", repo_id="org/tiny")


def test_generic_probe_summary_with_its_command(run, tmp_path):
    probe = {"command": "equimod-zoo probe-augs RUN --json probe_augs.json",
             "weights_sha256": sha256_file(run / WEIGHTS_FILE),
             "results": [{"parameter": "hue", "r2": 0.25}]}
    (run / "probe_augs.json").write_text(json.dumps(probe))
    export_model(run, tmp_path / "out", repo_id="org/tiny")
    text = (tmp_path / "out" / "README.md").read_text()
    assert "| parameter | r2 |\n|---|---|\n| hue | 0.25 |" in text
    assert "Measured by `equimod-zoo probe-augs RUN --json probe_augs.json`." in text
    del probe["weights_sha256"]
    (run / "probe_augs.json").write_text(json.dumps(probe))
    with pytest.raises(ValueError, match="probe_augs.json: measured on weights None"):
        export_model(run, tmp_path / "out2", repo_id="org/tiny")


def test_bad_repo_id_is_a_clear_error(run, tmp_path):
    with pytest.raises(ValueError, match="--repo-id 'tiny': not a Hugging Face repository id; expected ORG/NAME"):
        export_model(run, tmp_path / "out", repo_id="tiny")


def test_fp16_export_casts_the_heads_too(tmp_path, tiny_resnet18_cifar):
    heads = {"g_eq.0.weight": torch.randn(4, 64), "param_mean": torch.zeros(18)}
    write_model_folder(tmp_path / "src", tiny_resnet18_cifar, arch="resnet18_cifar", heads=heads,
                       model_args={"channels": (8, 16, 32, 64)})
    export_model(tmp_path / "src", tmp_path / "out", repo_id="equimod-zoo/tiny-r18", dtype="fp16")
    exported = safetensors.torch.load_file(str(tmp_path / "out" / HEADS_FILE))
    assert {k: v.dtype for k, v in exported.items()} == {"g_eq.0.weight": torch.float16, "param_mean": torch.float16}
