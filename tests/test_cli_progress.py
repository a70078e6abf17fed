"""Long work shows our one bar, naming what it does (the data, the split, the model); the libraries'
own progress bars and logs stay quiet unless `--verbose`."""
from __future__ import annotations

import logging

import datasets
import huggingface_hub.utils
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from equimod_zoo.cli import app, library_output
from equimod_zoo.model_folder import write_model_folder

WIDE = {"COLUMNS": "200"}  # one line a bar, so its description reads whole


@pytest.fixture
def tiny_model(tmp_path, tiny_resnet18_cifar):
    write_model_folder(tmp_path / "simclr_tiny", tiny_resnet18_cifar, arch="resnet18_cifar",
                       model_args={"channels": (8, 16, 32, 64), "stem_width": 8})
    return tmp_path / "simclr_tiny"


@pytest.fixture(autouse=True)
def _libraries_speak_again():
    yield
    library_output(verbose=True)


def _parquet(folder, split: str):
    folder.mkdir(parents=True, exist_ok=True)
    rows = [Image.fromarray(np.full((16, 16, 3), 50 * i, np.uint8)) for i in range(4)]
    data = datasets.Dataset.from_dict({"image": rows, "label": [0, 1, 0, 1]})
    data = data.cast_column("image", datasets.Image()).cast_column("label", datasets.ClassLabel(names=["a", "b"]))
    data.to_parquet(str(folder / f"{split}.parquet"))
    return folder


def test_the_libraries_are_quiet_unless_verbose():
    assert CliRunner().invoke(app, ["list"]).exit_code == 0
    assert not datasets.utils.logging.is_progress_bar_enabled()
    assert huggingface_hub.utils.are_progress_bars_disabled()
    assert logging.getLogger("timm").level == logging.ERROR and logging.getLogger("torch").level == logging.ERROR
    assert CliRunner().invoke(app, ["--verbose", "list"]).exit_code == 0
    assert datasets.utils.logging.is_progress_bar_enabled()
    assert not huggingface_hub.utils.are_progress_bars_disabled()
    assert logging.getLogger("torch").level == logging.NOTSET


def test_extract_shows_one_bar_naming_the_dataset_split_and_model(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf")
    data = _parquet(tmp_path / "quiet", "validation")
    args = ["extract", "--dataset", str(data), "--split", "validation", "--model", str(tiny_model), "--workers",
            "0", "--device", "cpu"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out")], env=WIDE)
    assert result.exit_code == 0, result.output
    assert f"extract {data} validation with simclr_tiny" in result.output
    assert "Generating" not in result.output  # the datasets library's own bar

    data = _parquet(tmp_path / "verbose", "validation")  # not in the datasets cache yet: generated again
    args[2] = str(data)
    result = CliRunner().invoke(app, ["--verbose", *args, "--out", str(tmp_path / "out2")], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "Generating validation split" in result.output


def test_transfer_bars_name_the_dataset_split_and_model(tmp_path, tiny_model):
    data = tmp_path / "dtd"
    for split in ("train", "test"):
        for label in ("a", "b"):
            (data / split / label).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(np.full((16, 16, 3), 60 * i + (label == "b") * 100, np.uint8)).save(
                    data / split / label / f"{i}.png")
    result = CliRunner().invoke(app, ["transfer", "--dataset", "dtd", "--data-dir", str(data), "--model",
                                      str(tiny_model), "--resolution", "16", "--cache-dir", str(tmp_path / "cache"),
                                      "--workers", "0", "--device", "cpu"], env=WIDE)
    assert result.exit_code == 0, result.output
    for split in ("train", "test"):
        assert f"extract dtd {split}, simclr_tiny at 16 px" in result.output
    assert "linear probe of simclr_tiny on dtd: L2 path, then the refit" in result.output
