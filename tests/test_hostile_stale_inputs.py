"""Stale inputs (issue 23, class 2): an image edited in place, at the same size and with its modification time put
back, is never served from a cache: not training's decoded images, not `--resume`, not extraction's finished shards,
not transfer's features or results."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from hostile import one_line_error
from PIL import Image
from toy_training import tiny_recipe
from typer.testing import CliRunner

import equimod_zoo
from equimod_zoo.cli import app
from equimod_zoo.extraction.extract import extract_features
from equimod_zoo.model_folder import write_model_folder
from equimod_zoo.training.data import load_train_data
from equimod_zoo.transfer.run import transfer
from equimod_zoo.yaml_io import dump_yaml

TINY = {"channels": (8, 16, 32, 64), "stem_width": 8}


def _bmp(path, colour):
    Image.new("RGB", (8, 8), colour).save(path)  # uncompressed: every edit keeps the size


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
        for i in range(8):
            _bmp(folder / label / f"{i}.bmp", (i * 30, 200 if label == "a" else 20, 90))
    return folder


def _edit_in_place(path, colour):
    """New pixels, the same size, and the old modification time put back (as `touch -r` or `rsync -t` would)."""
    before = os.stat(path)
    _bmp(path, colour)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_training_never_serves_stale_pixels_from_its_decoded_cache(tmp_path, images):
    first = load_train_data(images, base_size=8, cache_dir=tmp_path / "cache", progress=False)
    assert first.in_memory and len(list((tmp_path / "cache" / "decoded").glob("*.npy"))) == 1
    target = sorted(images.rglob("*.bmp")).index(images / "a" / "3.bmp")
    _edit_in_place(images / "a" / "3.bmp", (1, 2, 3))
    second = load_train_data(images, base_size=8, cache_dir=tmp_path / "cache", progress=False)
    assert second.info.sha256 != first.info.sha256
    assert second.images[target, :, 0, 0].tolist() == [1, 2, 3]  # the new pixels, not the cached ones
    # what a run records is the data, not where it lies: a copy elsewhere resumes
    shutil.copytree(images, tmp_path / "copy")
    assert load_train_data(tmp_path / "copy", base_size=8, cache_dir=tmp_path / "cache",
                           progress=False).info.sha256 == second.info.sha256


def test_resume_refuses_data_edited_in_place(tmp_path, images):
    recipe = tiny_recipe("simclr", epochs=2).to_dict()
    recipe.pop("name")
    (tmp_path / "toy.yaml").write_text(dump_yaml(recipe))
    base = ["train", "--data", str(images), "--out", str(tmp_path / "run"), "--device", "cpu", "--cache-dir",
            str(tmp_path / "cache")]
    started = CliRunner().invoke(app, [*base, "--recipe", str(tmp_path / "toy.yaml"), "--max-steps", "1"])
    assert started.exit_code == 0, started.output
    checkpoint = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    _edit_in_place(images / "b" / "5.bmp", (255, 255, 255))
    result = CliRunner().invoke(app, [*base, "--resume"])
    one_line_error(result, f"--data {images}: not the data this run was trained on")
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == checkpoint


def test_extraction_redoes_a_shard_whose_image_was_edited_in_place(tmp_path, images, tiny_resnet18_cifar):
    out = tmp_path / "features"
    options = dict(out=out, model=tiny_resnet18_cifar, num_workers=0, progress=False, shard_size=8, device="cpu")
    extract_features(images, **options)
    _, before = equimod_zoo.load_features(out)
    _edit_in_place(images / "b" / "2.bmp", (0, 0, 0))
    summary = extract_features(images, **options)
    assert (summary.shards_skipped, summary.shards_redone) == (1, 1)  # the shard of b/2.bmp, not a's
    paths, after = equimod_zoo.load_features(out)
    changed = [os.path.relpath(p, images) for p, x, y in zip(paths, before, after) if not np.array_equal(x, y)]
    assert changed == [os.path.join("b", "2.bmp")]


def test_transfer_recomputes_features_and_results_of_edited_data(tmp_path, tiny_resnet18_cifar):
    write_model_folder(tmp_path / "model", tiny_resnet18_cifar, arch="resnet18_cifar", model_args=TINY)
    tree = tmp_path / "tree"
    for split, count in (("train", 6), ("test", 4)):
        for label in ("a", "b"):
            (tree / split / label).mkdir(parents=True)
            for i in range(count):
                _bmp(tree / split / label / f"{i}.bmp", (i * 40, 200 if label == "a" else 10, 60))
    options = dict(protocol="knn", cache_dir=tmp_path / "cache", num_workers=0, device="cpu", progress=False)
    first = transfer(f"imagefolder:{tree}", model=tmp_path / "model", **options)
    again = transfer(f"imagefolder:{tree}", model=tmp_path / "model", reuse_result=True, **options)
    assert again.to_dict() == first.to_dict()  # unchanged data: the cached result
    for i in range(4):  # every test image of class a now looks like class b's
        _edit_in_place(tree / "test" / "a" / f"{i}.bmp", (i * 40, 10, 60))
    edited = transfer(f"imagefolder:{tree}", model=tmp_path / "model", reuse_result=True, **options)
    assert edited.cached_splits == [] and edited.score != first.score
    features = sorted((tmp_path / "cache" / "features").rglob("extraction.json"))
    assert len(features) == 4  # train and test, before and after the edit
