"""`transfer`: dataset layouts, split and metric handling, clear errors, the feature cache, the protocols."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from equimod_zoo.errors import UserError
from equimod_zoo.transfer import run as transfer_run
from equimod_zoo.transfer.datasets import DATASETS, load_splits, resolve_dataset
from equimod_zoo.transfer.finetune import FinetuneConfig
from equimod_zoo.transfer.run import transfer

COLOURS = ((220, 40, 40), (40, 200, 60), (40, 60, 220))
NAMES = ["red", "green", "blue"]



def colour_image(label: int, rng: np.random.Generator, size: int = 12) -> Image.Image:
    """A noisy image whose class is its colour: any backbone's features separate these."""
    pixels = np.array(COLOURS[label]) + rng.normal(0, 25, size=(size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def labels_for(count: int) -> list[int]:
    return [i % len(COLOURS) for i in range(count)]


def write_parquet(folder, sizes: dict[str, int], *, seed: int = 0, label_values=None, image_column="image",
                  label_column="label") -> None:
    """Parquet files in the Hugging Face layout (Image + ClassLabel features), one per split."""
    import datasets

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in sizes.items():
        labels = labels_for(n)
        images = [colour_image(c, rng) for c in labels]
        values = (label_values or {}).get(split, labels)
        label_feature = datasets.ClassLabel(names=NAMES) if label_values is None else datasets.Value("int64")
        table = datasets.Dataset.from_dict(
            {image_column: images, label_column: values},
            features=datasets.Features({image_column: datasets.Image(), label_column: label_feature}))
        table.to_parquet(str(folder / f"{split}.parquet"))


def write_imagefolder(folder, sizes: dict[str, int], *, seed: int = 0, classes=NAMES) -> None:
    rng = np.random.default_rng(seed)
    for split, n in sizes.items():
        for i, c in enumerate(labels_for(n)):
            if NAMES[c] not in classes:
                continue
            path = folder / split / NAMES[c] / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            colour_image(c, rng).save(path)


def write_cub(folder, *, train: int = 12, test: int = 9, seed: int = 0):
    """The original CUB_200_2011 layout, with 4 listed classes of which 3 have images."""
    rng = np.random.default_rng(seed)
    root = folder / "CUB_200_2011"
    classes = ["001.Red_bird", "002.Green_bird", "003.Blue_bird", "004.Unseen_bird"]
    images, labels, split = [], [], []
    for i, c in enumerate(labels_for(train) + labels_for(test)):
        relative = f"{classes[c]}/bird_{i}.jpg"
        (root / "images" / classes[c]).mkdir(parents=True, exist_ok=True)
        colour_image(c, rng).save(root / "images" / relative)
        images.append(f"{i + 1} {relative}")
        labels.append(f"{i + 1} {c + 1}")
        split.append(f"{i + 1} {1 if i < train else 0}")
    (root / "images.txt").write_text("\n".join(images) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (root / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (root / "classes.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    return root


@pytest.fixture
def model_folder(tmp_path, tiny_resnet18_cifar):
    from equimod_zoo.model_folder import write_model_folder

    folder = tmp_path / "simclr_tiny"
    write_model_folder(folder, tiny_resnet18_cifar, arch="resnet18_cifar",
                       model_args={"channels": (8, 16, 32, 64), "stem_width": 8})
    return folder


def run(dataset, model, **options):
    options = {"resolution": 16, "num_workers": 0, "device": "cpu", "progress": False, **options}
    return transfer(dataset, model=model, **options)


# --- the dataset table ---------------------------------------------------------------------------

def test_builtin_datasets_are_data_with_official_metrics():
    assert set(DATASETS) == {"flowers102", "cub200", "cifar10", "cifar100", "pets", "dtd", "food101", "caltech101",
                             "stl10"}
    per_class = {name for name, row in DATASETS.items() if row.metric == "mean_per_class_accuracy"}
    assert per_class == {"flowers102", "pets", "caltech101"}
    assert DATASETS["flowers102"].val_split == "validation"
    assert DATASETS["cifar10"].image_column == "img" and DATASETS["cifar100"].label_column == "fine_label"
    assert all(row.hub_id for row in DATASETS.values())


def test_resolve_dataset_forms_and_overrides(tmp_path):
    assert resolve_dataset("hf:someone/birds").hub_id == "someone/birds"
    folder = resolve_dataset(f"imagefolder:{tmp_path}")
    assert folder.local_dir == str(tmp_path) and folder.metric == "top1"
    assert resolve_dataset("cifar10", label_column="coarse").label_column == "coarse"
    with pytest.raises(KeyError, match="unknown dataset 'mnist'"):
        resolve_dataset("mnist")


# --- layouts, splits and the cache ---------------------------------------------------------------

def test_parquet_layout_official_val_metric_and_cache(tmp_path, model_folder, monkeypatch):
    data = tmp_path / "flowers"
    write_parquet(data, {"train": 24, "validation": 12, "test": 15})
    calls = []
    real_extract = transfer_run.extract_features
    monkeypatch.setattr(transfer_run, "extract_features", lambda *a, **k: calls.append(k["out"]) or real_extract(*a, **k))

    first = run("flowers102", model_folder, data_dir=data, cache_dir=tmp_path / "cache")
    assert first.metric == "mean_per_class_accuracy" and first.score == first.scores["mean_per_class_accuracy"]
    assert first.split_sizes == {"train": 24, "val": 12, "test": 15}
    assert first.hyperparameters["selected_on"] == "validation split"
    assert first.score >= 90.0  # colour is linearly separable in any backbone's features
    assert first.model == "simclr_tiny" and first.resolution == 16 and first.source.startswith("parquet:")
    assert len(calls) == 3 and first.cached_splits == []

    second = run("flowers102", model_folder, data_dir=data, cache_dir=tmp_path / "cache")
    assert len(calls) == 3, "the second run must reuse the cached features"
    assert sorted(second.cached_splits) == ["test", "train", "val"]
    assert second.score == pytest.approx(first.score)

    other_resolution = run("flowers102", model_folder, data_dir=data, cache_dir=tmp_path / "cache", resolution=20)
    assert len(calls) == 6 and other_resolution.resolution == 20  # a new key: extracted again


def test_the_default_resolution_is_the_models_own_but_at_least_64_px(tmp_path, model_folder):
    from equimod_zoo.transfer.run import MIN_RESOLUTION, default_resolution

    assert (MIN_RESOLUTION, default_resolution(32), default_resolution(224)) == (64, 64, 224)
    data = tmp_path / "dtd"
    write_imagefolder(data, {"train": 9, "test": 6})
    result = transfer("dtd", model=model_folder, data_dir=data, cache_dir=tmp_path / "cache", num_workers=0,
                      device="cpu", progress=False)  # the tiny model's input size is CIFAR's 32 px
    assert result.resolution == 64


def test_features_are_fp32_unless_asked_and_other_precisions_are_cached_apart(tmp_path, model_folder, monkeypatch):
    data = tmp_path / "dtd"
    write_imagefolder(data, {"train": 9, "test": 6})
    seen = []
    real_extract = transfer_run.extract_features
    monkeypatch.setattr(transfer_run, "extract_features",
                        lambda *a, **k: seen.append((k["precision"], k["out"])) or real_extract(*a, **k))
    first = run("dtd", model_folder, data_dir=data, cache_dir=tmp_path / "cache")
    assert first.precision == "fp32" and {p for p, _ in seen} == {"fp32"}  # on any CPU, bf16 or not
    second = run("dtd", model_folder, data_dir=data, cache_dir=tmp_path / "cache", precision="bf16")
    assert second.precision == "bf16" and len(seen) == 4  # extracted again, into folders of their own
    assert not {out for _, out in seen[:2]} & {out for _, out in seen[2:]}


def test_transfer_records_and_writes_json_as_one_call(tmp_path, model_folder):
    from equimod_zoo.records import read_records

    data = tmp_path / "dtd"
    write_imagefolder(data, {"train": 9, "test": 6})
    with pytest.raises(UserError, match="a model folder"):  # checked before any work
        run("dtd", model_folder, data_dir=data, cache_dir=tmp_path / "cache", record=model_folder)
    result = run("dtd", model_folder, data_dir=data, cache_dir=tmp_path / "cache", record=tmp_path / "records",
                 json_path=tmp_path / "result.json")
    assert json.loads((tmp_path / "result.json").read_text())["score"] == result.score
    assert [r.value for r in read_records(tmp_path / "records")] == [round(result.score, 4)]


def test_cache_dir_from_environment(tmp_path, model_folder, monkeypatch):
    data = tmp_path / "data"
    write_imagefolder(data, {"train": 9, "test": 6})
    monkeypatch.setenv("EQUIMOD_ZOO_CACHE", str(tmp_path / "envcache"))
    run("imagefolder:" + str(data), model_folder, protocol="knn")
    assert list((tmp_path / "envcache" / "features").rglob("extraction.json"))
    assert list((tmp_path / "envcache" / "results").rglob("knn-*.json"))


@pytest.mark.parametrize("give", ["parent", "root"])
def test_cub_layout_holds_out_val_from_train(tmp_path, model_folder, give):
    root = write_cub(tmp_path / "cub")
    data_dir = root.parent if give == "parent" else root
    splits = load_splits(resolve_dataset("cub200"), data_dir=data_dir)
    assert splits.sizes() == {"train": 12, "test": 9} and splits.num_classes == 4 and splits.val is None
    assert splits.label_names[0] == "001.Red_bird"
    result = run("cub200", model_folder, data_dir=data_dir, cache_dir=tmp_path / "cache")
    assert result.metric == "top1"
    assert result.split_sizes == {"train": 9, "val": 3, "test": 9}  # 20 % of train held out, per class
    assert result.hyperparameters["selected_on"] == "stratified 20% of train"
    assert result.score >= 80.0


def test_imagefolder_layout_and_knn(tmp_path, model_folder):
    data = tmp_path / "folders"
    write_imagefolder(data, {"train": 15, "val": 6, "test": 9})
    result = run(f"imagefolder:{data}", model_folder, protocol="knn", cache_dir=tmp_path / "cache")
    assert result.metric == "top1" and result.protocol == "knn"
    assert result.split_sizes == {"train": 15, "val": 6, "test": 9}
    assert result.hyperparameters == {"k": 21, "temperature": 0.1, "bank": "train+val"}
    assert result.score >= 80.0
    assert result.source == f"imagefolder:{data.resolve()}"
    # CIFAR-10 has no official validation split: its table row says so, and a val/ folder is not read
    cifar = run("cifar10", model_folder, data_dir=data, protocol="knn", cache_dir=tmp_path / "cache")
    assert cifar.split_sizes == {"train": 15, "test": 9} and cifar.hyperparameters["bank"] == "train"


def test_user_hub_style_dataset_without_validation(tmp_path, model_folder):
    data = tmp_path / "custom"
    write_parquet(data, {"train": 15, "test": 9}, image_column="picture", label_column="kind")
    dataset = resolve_dataset("hf:someone/custom", image_column="picture", label_column="kind")
    result = run(dataset, model_folder, data_dir=data, cache_dir=tmp_path / "cache")
    assert result.split_sizes["test"] == 9 and result.split_sizes["train"] + result.split_sizes["val"] == 15


# --- clear errors --------------------------------------------------------------------------------

def test_missing_split_names_dataset_and_split(tmp_path):
    data = tmp_path / "noval"
    write_parquet(data, {"train": 6, "test": 3})
    with pytest.raises(ValueError, match=r"flowers102: .* has no 'validation' split \(it has \['test', 'train'\]\)"):
        load_splits(resolve_dataset("flowers102"), data_dir=data, cache_dir=tmp_path / "c")


def test_unknown_column_names_dataset_split_and_column(tmp_path):
    data = tmp_path / "cols"
    write_parquet(data, {"train": 6, "test": 3})
    with pytest.raises(KeyError, match=r"cifar10 split 'train': image column 'img' is not in the dataset"):
        load_splits(resolve_dataset("cifar10"), data_dir=data, cache_dir=tmp_path / "c")


def test_labels_outside_range(tmp_path):
    data = tmp_path / "unlabelled"
    write_parquet(data, {"train": 6, "test": 3}, label_values={"test": [0, 1, -1]})
    with pytest.raises(ValueError, match=r"cifar100 split 'test': label column 'label': row 2 has label -1, below 0"):
        load_splits(resolve_dataset("cifar100", label_column="label", image_column="image"), data_dir=data,
                    cache_dir=tmp_path / "c")


def test_empty_class_in_train(tmp_path):
    data = tmp_path / "gap"
    write_imagefolder(data, {"train": 6}, classes=["red", "green"])
    write_imagefolder(data, {"test": 6})
    with pytest.raises(ValueError, match=r"split 'test': class folder 'blue' has no images"):
        load_splits(resolve_dataset(f"imagefolder:{data}"))
    parquet = tmp_path / "gap_parquet"
    write_parquet(parquet, {"train": 6, "test": 3}, label_values={"train": [0, 1, 0, 1, 0, 1]})
    with pytest.raises(ValueError, match=r"stl10 split 'test' column 'label': class 2 has no images in split 'train'"):
        load_splits(resolve_dataset("stl10"), data_dir=parquet, cache_dir=tmp_path / "c")


def test_not_a_dataset_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a dataset folder"):
        load_splits(resolve_dataset("cifar10"), data_dir=tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no such data folder"):
        load_splits(resolve_dataset("cifar10"), data_dir=tmp_path / "absent")


def test_cub_with_unknown_class(tmp_path):
    root = write_cub(tmp_path)
    (root / "image_class_labels.txt").write_text((root / "image_class_labels.txt").read_text().replace("1 1\n", "1 9\n", 1))
    with pytest.raises(ValueError, match="image 1 has class 9, which classes.txt does not list"):
        load_splits(resolve_dataset("cub200"), data_dir=root)


def test_each_command_hashes_and_builds_the_model_once(tmp_path, model_folder, monkeypatch):
    """transfer extracts three splits and compare runs two datasets: one sha256 pass, one network, each."""
    from equimod_zoo import loading, weights
    from equimod_zoo.transfer.compare import compare

    hashes, builds = [], []
    real_hash, real_build = weights.sha256_file, loading._build
    monkeypatch.setattr(weights, "sha256_file", lambda *a, **k: hashes.append(a[0]) or real_hash(*a, **k))
    monkeypatch.setattr(loading, "_build", lambda *a, **k: builds.append(a[0]) or real_build(*a, **k))
    flowers, dtd = tmp_path / "flowers", tmp_path / "dtd"
    write_parquet(flowers, {"train": 6, "validation": 6, "test": 6})
    write_imagefolder(dtd, {"train": 6, "test": 6})

    result = run("flowers102", model_folder, data_dir=flowers, cache_dir=tmp_path / "cache")
    assert result.cached_splits == [] and len(hashes) == 1 and len(builds) == 1

    hashes.clear(), builds.clear()
    compare([str(model_folder)], ["flowers102", "dtd"], out=tmp_path / "cmp", resolution=20,
            data_dirs={"flowers102": flowers, "dtd": dtd}, cache_dir=tmp_path / "cache", num_workers=0,
            device="cpu", progress=False)
    assert len(hashes) == 1 and len(builds) == 1


# --- fine-tuning, the command line, shared data --------------------------------------------------

def test_finetune_one_epoch_on_a_tiny_dataset(tmp_path, model_folder):
    data = tmp_path / "ft"
    write_imagefolder(data, {"train": 12, "test": 6})
    config = FinetuneConfig(epochs=1, batch_size=4, num_workers=0)
    result = run(f"imagefolder:{data}", model_folder, protocol="finetune", finetune_config=config,
                 cache_dir=tmp_path / "cache")
    assert result.protocol == "finetune" and result.split_sizes == {"train": 12, "test": 6}
    assert 0.0 <= result.score <= 100.0 and result.hyperparameters["epochs"] == 1
    checkpoint = next((tmp_path / "cache" / "results").rglob("*.checkpoint.pt"))
    state = torch.load(checkpoint, weights_only=True)
    assert state["epoch"] == 1 and any(k.startswith("fc.") for k in state["model"])


def test_transfer_command_writes_json(tmp_path, model_folder):
    from typer.testing import CliRunner

    from equimod_zoo.cli import app

    data = tmp_path / "cli"
    write_imagefolder(data, {"train": 9, "test": 6})
    out = tmp_path / "result.json"
    result = CliRunner().invoke(app, ["transfer", "--dataset", "dtd", "--data-dir", str(data), "--model",
                                      str(model_folder), "--resolution", "16", "--json", str(out), "--cache-dir",
                                      str(tmp_path / "cache"), "--workers", "0", "--device", "cpu", "--record",
                                      str(tmp_path / "records")])
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert {"dataset", "split_sizes", "model", "weights_sha256", "resolution", "protocol", "metric", "score",
            "hyperparameters"} <= set(written)
    assert written["dataset"] == "dtd" and written["metric"] == "top1" and "weight_decay" in written["hyperparameters"]
    from equimod_zoo.records import read_records
    assert [(m.metric, m.dataset, m.protocol) for m in read_records(tmp_path / "records")] == [("top1", "dtd", "linear")]
    assert read_records(tmp_path / "records")[0].weights_sha256 == written["weights_sha256"]

    bad = CliRunner().invoke(app, ["transfer", "--dataset", "mnist", "--model", str(model_folder)])
    assert bad.exit_code == 2 and "unknown dataset 'mnist'" in bad.output


def test_shared_cub_sample(shared_data, tmp_path, model_folder):
    from equimod_zoo.data.images import load_rgb

    data_dir = shared_data / "cub200-sample"
    splits = load_splits(resolve_dataset("cub200"), data_dir=data_dir / "CUB_200_2011")
    assert splits.sizes() == {"train": 300, "test": 243} and splits.num_classes == 200
    # Loading, checked against the release's own files: every image's label is the class folder it
    # sits in, and the images are real, distinct photographs. (An untrained model's kNN score is
    # near chance, 1 in 10 classes, either side of it: no bound on it can tell broken from not.)
    for source in (splits.train, splits.test):
        folders = {Path(source.key(i)).parent.name for i in range(len(source))}
        assert len(folders) == 10
        assert all(splits.label_names[source.label(i)] == Path(source.key(i)).parent.name for i in range(len(source)))
    means = [np.asarray(load_rgb(lambda i=i: splits.test.open(i)).image, dtype=np.float64).mean() for i in range(0, 243, 24)]
    assert all(20 < m < 235 for m in means) and len(set(np.round(means, 3))) == len(means)
    result = run("cub200", model_folder, data_dir=data_dir, protocol="knn", cache_dir=tmp_path / "cache")
    assert result.split_sizes == {"train": 300, "test": 243}
    assert 0.0 <= result.score <= 100.0 and result.source == f"cub:{(data_dir / 'CUB_200_2011').resolve()}"


def test_limit_takes_evenly_spaced_images_of_each_split_for_a_quick_look(tmp_path, model_folder):
    data = tmp_path / "sorted"
    write_imagefolder(data, {"train": 30, "test": 15})  # class folders: each split sorted by class
    splits = load_splits(resolve_dataset(f"imagefolder:{data}"), limit=6)
    assert splits.sizes() == {"train": 6, "test": 6} and splits.num_classes == 3
    assert sorted({splits.train.label(i) for i in range(6)}) == [0, 1, 2]  # not the first class only
    result = run(f"imagefolder:{data}", model_folder, limit=6, protocol="knn", cache_dir=tmp_path / "cache")
    assert result.split_sizes == {"train": 6, "test": 6} and result.source.endswith(", limit 6")
    full = run(f"imagefolder:{data}", model_folder, protocol="knn", cache_dir=tmp_path / "cache")
    assert full.split_sizes == {"train": 30, "test": 15}  # the quick look's cache is not the full run's
