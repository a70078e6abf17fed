"""Disks that fail (issue 23, class 6): a full, read-only or forbidden output disk is one line naming the file
and what to do, whichever library was writing, and what was there before is untouched."""
from __future__ import annotations

import errno
import os
import tempfile

import numpy as np
import pytest
import torch
from hostile import one_line_error, run_capped, snapshot
from PIL import Image
from test_export_card import make_run_folder
from toy_training import tiny_recipe, write_toy_parquet
from typer.testing import CliRunner

import equimod_zoo.atomic
from equimod_zoo.atomic import atomic_path
from equimod_zoo.cli import app
from equimod_zoo.data.sources import imagefolder_source
from equimod_zoo.errors import DiskError
from equimod_zoo.extraction.extract import extract_features
from equimod_zoo.model_folder import write_model_folder
from equimod_zoo.yaml_io import dump_yaml

TINY = {"channels": (8, 16, 32, 64), "stem_width": 8}


@pytest.fixture
def model(tmp_path, tiny_resnet18_cifar):
    write_model_folder(tmp_path / "model", tiny_resnet18_cifar, arch="resnet18_cifar", model_args=TINY)
    return tmp_path / "model"


def _images(folder, count, size=8):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), np.uint8)).save(folder / f"{i:04d}.png")
    return folder


def _toy_recipe(tmp_path):
    recipe = tiny_recipe("simclr", epochs=1).to_dict()
    recipe.pop("name")
    (tmp_path / "toy.yaml").write_text(dump_yaml(recipe))
    return tmp_path / "toy.yaml"


def test_a_full_disk_is_one_line_from_numpy_pyarrow_and_torch_alike(tmp_path, model):
    """Writes past 32 KB fail in the operating system (RLIMIT_FSIZE), as on a full disk: a .npy of
    features (numpy reports no errno), a training checkpoint (torch.save turns the error into a
    RuntimeError) and a parquet file all end in the same line."""
    images = _images(tmp_path / "images", 300)  # 300 x 64 float16 features: 38 KB of .npy
    data = tmp_path / "data"
    data.mkdir()
    write_toy_parquet(data)
    before = snapshot(images, data, model)
    argvs = [
        ["extract", "--images", str(images), "--model", str(model), "--out", str(tmp_path / "features"),
         "--workers", "0", "--shard-size", "1000", "--device", "cpu"],
        ["train", "--recipe", str(_toy_recipe(tmp_path)), "--data", str(data), "--out", str(tmp_path / "run"),
         "--device", "cpu", "--cache-dir", str(tmp_path / "cache")],
    ]
    extract, train = run_capped(argvs, cwd=tmp_path, file_size=32 << 10, timeout=180)
    one_line_error(extract, str(tmp_path / "features" / "img_emb" / "img_emb_0.npy"), "file too large",
                   "free some space")
    one_line_error(train, str(tmp_path / "run"), "file too large", "and rerun")  # the model, then the checkpoint
    assert snapshot(images, data, model) == before
    leftovers = [p for p in [*tmp_path.joinpath("features").rglob("*"), *tmp_path.joinpath("run").rglob("*")]
                 if p.name.endswith(".tmp")]
    assert not leftovers


class _Disk:
    """`tempfile` as equimod_zoo.atomic sees it on a disk that refuses every new file with `code`."""

    def __init__(self, code):
        self.code = code

    def mkstemp(self, *args, dir=None, **kwargs):
        raise OSError(self.code, os.strerror(self.code), dir)

    def TemporaryFile(self, *args, **kwargs):  # noqa: N802 - tempfile's name
        raise OSError(self.code, os.strerror(self.code))


def _setup(command, tmp_path, model, tiny_resnet18_cifar):
    """(command line, the file it writes first, the folders of the user's that must stay as they are)."""
    if command == "extract":
        images = _images(tmp_path / "images", 6)
        return (["extract", "--images", str(images), "--model", str(model), "--out", str(tmp_path / "out"),
                 "--workers", "0"], tmp_path / "out" / "extraction.json", [images, model])
    if command == "linear":
        tree = tmp_path / "tree"
        for label in ("a", "b"):
            _images(tree / label, 6)
        features = tmp_path / "features"
        extract_features(imagefolder_source(tree), out=features, model=model, num_workers=0, progress=False,
                         device="cpu")
        return (["linear", "--train", str(features), "--test", str(features), "--json", str(tmp_path / "r.json"),
                 "--device", "cpu"], tmp_path / "r.json", [tree, features])
    if command == "publish":
        make_run_folder(tmp_path / "run", tiny_resnet18_cifar, results=False)
        return (["publish", str(tmp_path / "run"), "--repo-id", "org/tiny", "--out", str(tmp_path / "out"),
                 "--dry-run"], ".partial/config.json", [tmp_path / "run"])
    data = tmp_path / "data"
    data.mkdir()
    write_toy_parquet(data)
    return (["train", "--recipe", str(_toy_recipe(tmp_path)), "--data", str(data), "--out", str(tmp_path / "out"),
             "--device", "cpu", "--cache-dir", str(tmp_path / "cache")], "decoded", [data])


@pytest.mark.parametrize(("command", "code", "says"), [
    ("extract", errno.EROFS, "read-only file system; use a folder you have the rights to"),
    ("linear", errno.ENOSPC, "no space left on the device; free some space"),
    ("publish", errno.EDQUOT, "over the disk quota"),
    ("train", errno.EACCES, "permission denied"),
])
def test_every_command_names_the_file_the_disk_refused(tmp_path, model, tiny_resnet18_cifar, monkeypatch, command,
                                                        code, says):
    argv, written, users = _setup(command, tmp_path, model, tiny_resnet18_cifar)
    before = snapshot(*users)
    monkeypatch.setattr(equimod_zoo.atomic, "tempfile", _Disk(code))
    result = CliRunner().invoke(app, argv)
    one_line_error(result, str(written), says)
    assert snapshot(*users) == before
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith((".tmp", ".partial"))]


def test_a_failed_write_that_is_not_the_disk_keeps_its_traceback(tmp_path):
    with pytest.raises(RuntimeError, match="a bug"), atomic_path(tmp_path / "x.pt"):
        raise RuntimeError("a bug")  # the folder takes writes: this is not the user's disk
    assert os.listdir(tmp_path) == []
    with pytest.raises(DiskError, match="x.pt: no space left on the device"):
        with atomic_path(tmp_path / "x.pt") as tmp:
            torch.save({"w": torch.zeros(4)}, tmp)
            raise OSError(errno.ENOSPC, "No space left on device")
    assert os.listdir(tmp_path) == []
    assert tempfile.gettempdir()  # the real module was never replaced outside the tests that say so
