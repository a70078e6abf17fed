"""Paths that escape (issue 23, class 9): a dataset row that holds a path instead of bytes, or a CUB images.txt
line, opens a file only inside the dataset's own folder unless the user says otherwise (`--allow-outside-paths`);
an empty `--model` is an error, never the working folder."""
from __future__ import annotations

import csv
import os

import datasets
import pytest
from hostile import one_line_error, snapshot
from PIL import Image
from typer.testing import CliRunner

from equimod_zoo.cli import app
from equimod_zoo.data.sources import HFDatasetSource, open_image_cell
from equimod_zoo.data.spec import open_split, resolve_spec
from equimod_zoo.data.streams import RowsSource
from equimod_zoo.errors import UserError
from equimod_zoo.model_folder import write_model_folder

TINY = {"channels": (8, 16, 32, 64), "stem_width": 8}
OUTSIDE = "is outside the dataset's folder"


@pytest.fixture
def model(tmp_path, tiny_resnet18_cifar):
    write_model_folder(tmp_path / "model", tiny_resnet18_cifar, arch="resnet18_cifar", model_args=TINY)
    return tmp_path / "model"


@pytest.fixture
def layout(tmp_path, monkeypatch):
    """A dataset folder whose rows name files by path: inside it, outside it by `..`, by an absolute path, and
    through a link that leads out; and a secret image beside it."""
    Image.new("RGB", (8, 8), (250, 0, 0)).save(tmp_path / "secret.png")
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    Image.new("RGB", (8, 8), (0, 250, 0)).save(data / "images" / "inside.png")
    os.symlink(tmp_path / "secret.png", data / "images" / "link.png")
    paths = ["images/inside.png", "../secret.png", str(tmp_path / "secret.png"), "images/link.png",
             str(data / "images" / "inside.png")]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    with monkeypatch.context() as patch:
        patch.chdir(data)  # datasets measures the files a row names while it writes
        datasets.Dataset.from_dict({"image": [{"bytes": None, "path": p} for p in paths], "label": [0, 1, 0, 1, 0]},
                                   features=features).to_parquet(str(data / "test.parquet"))
    return data


def _failures(out):
    with open(out / "failures.csv", newline="") as handle:
        return {row["path"]: row["error"] for row in csv.DictReader(handle)}


@pytest.mark.parametrize("streaming", [False, True])
def test_rows_read_only_inside_the_dataset_folder_unless_allowed(tmp_path, model, layout, streaming):
    before = snapshot(layout, tmp_path / "secret.png")
    argv = ["extract", "--dataset", str(layout), "--model", str(model), "--workers", "0", "--device", "cpu",
            *(["--streaming"] if streaming else [])]
    result = CliRunner().invoke(app, [*argv, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "2 of 5 images" in result.stdout  # inside.png, by its relative and by its absolute path
    failures = _failures(tmp_path / "out")
    assert sorted(failures) == ["test/1", "test/2", "test/3"], failures
    assert all(OUTSIDE in error and "--allow-outside-paths" in error for error in failures.values())
    allowed = CliRunner().invoke(app, [*argv, "--out", str(tmp_path / "allowed"), "--allow-outside-paths"])
    assert allowed.exit_code == 0 and "5 of 5 images" in allowed.stdout, allowed.output
    assert snapshot(layout, tmp_path / "secret.png") == before


def test_training_refuses_a_row_outside_its_data_in_one_line(tmp_path, layout):
    result = CliRunner().invoke(app, ["train", "--recipe", "simclr_r18_cifar10_cpu", "--data", str(layout), "--out",
                                      str(tmp_path / "run"), "--device", "cpu", "--cache-dir", str(tmp_path / "c")])
    one_line_error(result, "training image test/1", "'../secret.png' " + OUTSIDE)


def test_the_one_cell_decoder_serves_both_source_kinds(layout):
    table = datasets.load_dataset("parquet", data_files=str(layout / "test.parquet"), split="train")
    loaded = HFDatasetSource(table, name="test", root=str(layout))
    streamed = RowsSource("test", 0, list(table.cast_column("image", datasets.Image(decode=False))["image"]),
                          None, None, root=str(layout))
    for source in (loaded, streamed):
        assert source.open(0).size == (8, 8) and source.open(4).size == (8, 8)
        for i in (1, 2, 3):
            with pytest.raises(UserError, match=OUTSIDE):
                source.open(i)
    with pytest.raises(UserError, match="has no folder"):
        open_image_cell({"bytes": None, "path": "x.png"}, root=None)
    assert open_image_cell({"bytes": None, "path": str(layout / "images" / "link.png")}, root=None,
                           allow_outside=True).size == (8, 8)


def test_a_cub_listing_that_leaves_its_folder_is_refused(tmp_path):
    root = tmp_path / "CUB_200_2011"
    (root / "images" / "001.Bird").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "images" / "001.Bird" / "a.jpg")
    Image.new("RGB", (8, 8)).save(tmp_path / "secret.jpg")
    (root / "images.txt").write_text("1 001.Bird/a.jpg\n2 ../../secret.jpg\n")
    (root / "image_class_labels.txt").write_text("1 1\n2 1\n")
    (root / "train_test_split.txt").write_text("1 1\n2 0\n")
    (root / "classes.txt").write_text("1 001.Bird\n")
    with pytest.raises(UserError, match=r"images.txt: image 2 is '../../secret.jpg', outside .*images; refused"):
        open_split(resolve_spec(root), split="test")
    assert len(open_split(resolve_spec(root, allow_outside_paths=True), split="test")) == 1


@pytest.mark.parametrize("command", [
    ["extract", "--images", "IMAGES", "--out", "OUT", "--workers", "0", "--model", ""],
    ["transfer", "--dataset", "imagefolder:IMAGES", "--model", ""],
    ["probe-augs", "--dataset", "imagefolder:IMAGES", "--model", ""],
])
def test_an_empty_model_is_an_error_not_the_working_folder(tmp_path, model, monkeypatch, command):
    images = tmp_path / "images"
    (images / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(images / "a" / "0.png")
    work = tmp_path / "work"
    work.mkdir()
    for name in ("config.json", "model.safetensors"):  # the working folder is a model folder: "" must not mean it
        (work / name).write_bytes((model / name).read_bytes())
    monkeypatch.chdir(work)
    argv = [word.replace("IMAGES", str(images)).replace("OUT", str(tmp_path / "out")) for word in command]
    one_line_error(CliRunner().invoke(app, argv), "model: empty name", "'.' for the working folder")
    assert sorted(os.listdir(work)) == ["config.json", "model.safetensors"]
