"""Errors from worker processes (issue 23, class 10): a bad image met by a DataLoader worker is told in one line
naming the file and the reason, word for word as without workers; a bug in a worker keeps its traceback."""
from __future__ import annotations

import csv

import pytest
import torch
from hostile import one_line_error
from PIL import Image
from toy_training import tiny_recipe
from typer.testing import CliRunner

from equimod_zoo.cli import app
from equimod_zoo.data.workers import UserErrorLoader
from equimod_zoo.errors import UserError
from equimod_zoo.model_folder import write_model_folder
from equimod_zoo.training.data import BatchLoader, EpochSampler, load_train_data
from equimod_zoo.yaml_io import dump_yaml

TINY = {"channels": (8, 16, 32, 64), "stem_width": 8}


@pytest.fixture
def images(tmp_path):
    """An image folder with one file that is not an image."""
    folder = tmp_path / "images"
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
        for i in range(8):
            Image.new("RGB", (8, 8), (i * 30, 200 if label == "a" else 20, 0)).save(folder / label / f"{i}.png")
    (folder / "b" / "9.png").write_bytes(b"not a png at all")
    return folder


def _train(tmp_path, images, workers, out):
    recipe = tiny_recipe("simclr", epochs=1).to_dict()
    recipe.pop("name")
    (tmp_path / "toy.yaml").write_text(dump_yaml(recipe))
    return CliRunner().invoke(app, ["train", "--recipe", str(tmp_path / "toy.yaml"), "--data", str(images), "--out",
                                    str(out), "--device", "cpu", "--workers", str(workers), "--cache-dir",
                                    str(tmp_path / "cache")])


def test_training_names_the_bad_image_alike_with_and_without_workers(tmp_path, images):
    lines = [one_line_error(_train(tmp_path, images, workers, tmp_path / f"run{workers}"),
                            f"training image {images / 'b' / '9.png'}", "UnidentifiedImageError")
             for workers in (0, 2)]
    assert lines[0] == lines[1] and len(lines[1]) < 400, lines


def test_batches_decoded_by_workers_name_the_bad_image_too(tmp_path, images):
    data = load_train_data(images, base_size=8, cache_dir=tmp_path / "cache", memory_budget=0, progress=False)
    assert not data.in_memory  # decoded batch by batch, in the workers
    loader = BatchLoader(data, EpochSampler(len(data), batch_size=17, seed=0), device=torch.device("cpu"), workers=2)
    with pytest.raises(UserError) as caught:
        list(loader.epoch(0))
    message = str(caught.value)
    assert message.startswith(f"training image {images / 'b' / '9.png'}: UnidentifiedImageError") and \
        "Traceback" not in message and "\n" not in message


def test_transfer_fine_tuning_names_the_bad_image(tmp_path, images, tiny_resnet18_cifar):
    write_model_folder(tmp_path / "model", tiny_resnet18_cifar, arch="resnet18_cifar", model_args=TINY)
    tree = tmp_path / "tree"
    for split in ("train", "test"):
        for label in ("a", "b"):
            (tree / split / label).mkdir(parents=True)
            for i in range(3):
                (tree / split / label / f"{i}.png").write_bytes((images / label / f"{i}.png").read_bytes())
    (tree / "train" / "b" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    result = CliRunner().invoke(app, ["transfer", "--dataset", f"imagefolder:{tree}", "--model",
                                      str(tmp_path / "model"), "--protocol", "finetune", "--epochs", "1",
                                      "--workers", "2", "--batch-size", "4", "--device", "cpu", "--cache-dir",
                                      str(tmp_path / "cache")])
    one_line_error(result, f"{tree / 'train' / 'b' / 'bad.png'}: cannot be decoded")


def test_extraction_workers_list_the_bad_image(tmp_path, images, tiny_resnet18_cifar):
    write_model_folder(tmp_path / "model", tiny_resnet18_cifar, arch="resnet18_cifar", model_args=TINY)
    result = CliRunner().invoke(app, ["extract", "--images", str(images), "--model", str(tmp_path / "model"),
                                      "--out", str(tmp_path / "out"), "--workers", "2", "--device", "cpu"])
    assert result.exit_code == 0 and "16 of 17 images" in result.stdout, result.output
    with open(tmp_path / "out" / "failures.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["path"] for row in rows] == [str(images / "b" / "9.png")]
    assert rows[0]["error"].startswith("UnidentifiedImageError: cannot identify image file")


class _Buggy(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        if index == 2:
            raise ZeroDivisionError("a bug in our code")
        return torch.zeros(2)


def test_a_bug_in_a_worker_keeps_its_traceback():
    with pytest.raises(ZeroDivisionError, match="Original Traceback"):
        list(UserErrorLoader(_Buggy(), batch_size=2, num_workers=1))
    assert [b.shape for b in UserErrorLoader(_Buggy(), batch_size=2, num_workers=0, sampler=[0, 1, 3])] == [
        torch.Size([2, 2]), torch.Size([1, 2])]
