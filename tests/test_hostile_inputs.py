"""Hostile inputs (issue 15): empty paths, FIFOs named like images, names that are not UTF-8, extreme shapes."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import equimod_zoo
from equimod_zoo.cli import app
from equimod_zoo.data.images import load_rgb, pixels_at_base
from equimod_zoo.errors import ImageTooLargeError
from equimod_zoo.data.sources import folder_source
from equimod_zoo.extraction.extract import extract_features
from equimod_zoo.model_folder import write_model_folder

TINY_ARGS = {"channels": (8, 16, 32, 64), "stem_width": 8}


@pytest.fixture
def model_folder(tmp_path, tiny_resnet18_cifar):
    write_model_folder(tmp_path / "model", tiny_resnet18_cifar, arch="resnet18_cifar", model_args=TINY_ARGS)
    return tmp_path / "model"


def _photo(path, size=(20, 16), seed=0):
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), np.uint8)).save(path)


# --- an empty path is an error naming the option, never the working folder ------------------------

@pytest.mark.parametrize("option", ["--out", "--images"])
def test_extract_refuses_an_empty_path(tmp_path, model_folder, monkeypatch, option):
    (tmp_path / "imgs").mkdir()
    _photo(tmp_path / "imgs" / "a.png")
    monkeypatch.chdir(tmp_path / "imgs")  # were "" the working folder, this would extract it
    values = {"--out": str(tmp_path / "out"), "--images": str(tmp_path / "imgs"), option: ""}
    result = CliRunner().invoke(app, ["extract", "--model", str(model_folder), "--workers", "0",
                                      *[x for kv in values.items() for x in kv]])
    assert result.exit_code == 2 and option in result.output and "empty path" in result.output
    assert not (tmp_path / "imgs" / "features").exists() and not (tmp_path / "out").exists()


def test_extract_refuses_an_empty_dataset(tmp_path, model_folder):
    result = CliRunner().invoke(app, ["extract", "--model", str(model_folder), "--dataset", "", "--out",
                                      str(tmp_path / "out")])
    assert result.exit_code == 2 and "--dataset: empty" in result.output and "Traceback" not in result.output


def test_train_refuses_an_empty_data_and_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["train", "--recipe", "simclr_r18_cifar10_cpu", "--data", "", "--out",
                                      str(tmp_path / "run"), "--device", "cpu"])
    assert result.exit_code == 2 and "--data: empty" in result.output
    result = CliRunner().invoke(app, ["train", "--recipe", "simclr_r18_cifar10_cpu", "--data", str(tmp_path),
                                      "--out", "", "--device", "cpu"])
    assert result.exit_code == 2 and "--out" in result.output and "empty path" in result.output
    assert os.listdir(tmp_path) == []


def test_transfer_refuses_an_empty_dataset_and_data_dir(tmp_path, model_folder):
    result = CliRunner().invoke(app, ["transfer", "--dataset", "", "--model", str(model_folder)])
    assert result.exit_code == 2 and "--dataset: empty" in result.output
    result = CliRunner().invoke(app, ["transfer", "--dataset", "dtd", "--data-dir", "", "--model", str(model_folder)])
    assert result.exit_code == 2 and "--data-dir" in result.output and "empty path" in result.output


# --- nothing hangs, nothing aborts the run ---------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_named_like_an_image_is_listed_never_opened(tmp_path, tiny_resnet18_cifar):
    (tmp_path / "imgs").mkdir()
    _photo(tmp_path / "imgs" / "a.jpg")
    os.mkfifo(tmp_path / "imgs" / "pipe.jpg")  # opening it would block until a writer comes: forever
    os.symlink("/dev/zero", tmp_path / "imgs" / "zero.png")  # a device: endless bytes
    summary = extract_features(tmp_path / "imgs", out=tmp_path / "out", model=tiny_resnet18_cifar, num_workers=0,
                               progress=False)
    assert (summary.num_extracted, summary.num_failed) == (1, 2)
    failures = (tmp_path / "out" / "failures.csv").read_text()
    assert "pipe.jpg,UserError: not a regular file (a FIFO); not opened" in failures
    assert "zero.png,UserError: not a regular file (a device); not opened" in failures


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS refuses file names that are not UTF-8")
def test_a_file_name_that_is_not_utf8_is_extracted(tmp_path, tiny_resnet18_cifar):
    folder = tmp_path / "imgs"
    folder.mkdir()
    _photo(folder / "plain.jpg", seed=1)
    raw = os.fsencode(folder) + b"/caf\xe9.jpg"  # Latin-1 bytes: not valid UTF-8
    _photo(raw.decode(sys.getfilesystemencoding(), "surrogateescape"), seed=2)
    broken = os.fsencode(folder) + b"/bad\xff.png"
    with open(broken, "wb") as handle:
        handle.write(b"not an image")
    summary = extract_features(folder, out=tmp_path / "out", model=tiny_resnet18_cifar, num_workers=0, progress=False)
    assert (summary.num_images, summary.num_extracted, summary.num_failed) == (3, 2, 1)
    paths, features = equimod_zoo.load_features(tmp_path / "out")
    assert [os.path.basename(p) for p in paths] == ["caf\\xe9.jpg", "plain.jpg"] and features.shape[0] == 2
    assert "bad\\xff.png" in (tmp_path / "out" / "failures.csv").read_text(encoding="utf-8")
    assert folder_source(folder).key(0).endswith("bad\\xff.png")


def test_work_is_bounded_by_the_resized_size_not_only_the_file(tmp_path):
    Image.new("L", (400_000, 1), 128).save(tmp_path / "line.png")  # a few hundred bytes
    assert (tmp_path / "line.png").stat().st_size < 2000
    opener = lambda: Image.open(tmp_path / "line.png")  # noqa: E731
    assert load_rgb(opener).width == 400_000  # decoding alone is small: 400000 pixels
    with pytest.raises(ImageTooLargeError, match=r"400000x1 pixels would resize to 89600000x224"):
        load_rgb(opener, resize_to=224)  # 20 G pixels once upsampled: refused before decoding
    with pytest.raises(ImageTooLargeError, match="would resize"):
        pixels_at_base(opener, 32)  # training's and the probes' path
    Image.new("L", (64, 2), 128).save(tmp_path / "strip.png")  # a merely wide image still loads
    assert pixels_at_base(lambda: Image.open(tmp_path / "strip.png"), 32).shape == (3, 32, 32)


def test_extraction_lists_an_extreme_shape_and_goes_on(tmp_path, tiny_resnet18_cifar):
    (tmp_path / "imgs").mkdir()
    _photo(tmp_path / "imgs" / "a.jpg")
    Image.new("L", (400_000, 1), 0).save(tmp_path / "imgs" / "line.png")
    summary = extract_features(tmp_path / "imgs", out=tmp_path / "out", model=tiny_resnet18_cifar, num_workers=0,
                               progress=False)
    assert (summary.num_extracted, summary.num_failed) == (1, 1)
    assert 'line.png,"ImageTooLargeError: 400000x1 pixels would resize to' in (
        tmp_path / "out" / "failures.csv").read_text()
