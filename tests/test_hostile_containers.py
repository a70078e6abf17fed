"""Damaged containers (issue 23, class 7): a tar shard with a broken header or a member cut short, a parquet file
that is garbage or damaged inside, a feature shard whose recorded metadata is not JSON, a null label: what cannot be
read is listed in failures.csv or refused in one line, and nothing is dropped without a record."""
from __future__ import annotations

import csv
import io
import json
import tarfile

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
from hostile import one_line_error, snapshot
from PIL import Image
from typer.testing import CliRunner

import equimod_zoo
from equimod_zoo.cli import app
from equimod_zoo.extraction.extract import extract_features
from equimod_zoo.model_folder import write_model_folder

TINY = {"channels": (8, 16, 32, 64), "stem_width": 8}


@pytest.fixture
def model(tmp_path, tiny_resnet18_cifar):
    write_model_folder(tmp_path / "model", tiny_resnet18_cifar, arch="resnet18_cifar", model_args=TINY)
    return tmp_path / "model"


def _png(seed):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _shard(path, count=6):
    with tarfile.open(path, "w") as tar:
        for i in range(count):
            data = _png(i)
            info = tarfile.TarInfo(f"sample{i:02d}.png")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return [member.offset for member in tarfile.open(path)]


def _extract(model, out, *inputs):
    return CliRunner().invoke(app, ["extract", *map(str, inputs), "--model", str(model), "--out", str(out),
                                    "--workers", "0", "--device", "cpu"])


def _failures(out):
    with open(out / "failures.csv", newline="") as handle:
        return [(row["path"], row["error"]) for row in csv.DictReader(handle)]


@pytest.mark.parametrize("damage", ["header", "cut short", "garbage tail"])
def test_a_damaged_tar_shard_lists_what_it_could_not_read(tmp_path, model, damage):
    shards = tmp_path / "shards"
    shards.mkdir()
    _shard(shards / "000.tar")
    offsets = _shard(shards / "001.tar")
    raw = bytearray((shards / "001.tar").read_bytes())
    if damage == "header":  # sample03's header is garbage: tarfile stops there, as if the archive ended
        raw[offsets[3]:offsets[3] + 200] = b"\xff" * 200
    elif damage == "cut short":  # sample05 claims more bytes than the file has left
        raw = raw[:offsets[5] + 512 + 40]
    else:  # the zeros that end an archive, then data no header announces
        raw[-2048:] = b"\x42" * 2048
    (shards / "001.tar").write_bytes(bytes(raw))
    before = snapshot(shards)
    result = _extract(model, tmp_path / "out", shards / "{000..001}.tar")
    assert result.exit_code == 0, result.output
    failures = _failures(tmp_path / "out")
    damaged = [(path, error) for path, error in failures if path.startswith(str(shards / "001.tar@"))]
    assert len(damaged) == 1 and "the samples after it could not be read" in damaged[0][1], failures
    paths, _ = equimod_zoo.load_features(tmp_path / "out")
    expected = {"header": 6 + 3, "cut short": 6 + 5, "garbage tail": 6 + 6}[damage]
    assert len(paths) == expected  # every sample before the damage was read; the rest is one listed row
    if damage == "cut short":
        assert ("sample05", "UserError: " + f"{shards / '001.tar'}: truncated at this member (40 of "
                f"{len(_png(5))} bytes)") in failures
    assert snapshot(shards) == before


def test_a_garbage_or_damaged_parquet_file_is_one_line(tmp_path, model):
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "train.parquet").write_bytes(np.random.default_rng(0).bytes(5000))
    tiny = tmp_path / "tiny.parquet"
    tiny.write_bytes(b"PAR1garbagePAR1")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=2)})
    datasets.Dataset.from_dict({"image": [Image.new("RGB", (8, 8), (i, 0, 0)) for i in range(50)],
                                "label": [0, 1] * 25}, features=features).to_parquet(str(damaged / "train.parquet"))
    raw = bytearray((damaged / "train.parquet").read_bytes())
    raw[200:len(raw) // 2] = b"\x07" * (len(raw) // 2 - 200)  # the pages, not the footer
    (damaged / "train.parquet").write_bytes(bytes(raw))
    before = snapshot(garbage, damaged, tiny)
    for spec, needle in [(garbage, "train.parquet: not a readable parquet file (Parquet magic bytes not found"),
                         (tiny, "tiny.parquet: not a readable parquet file"),
                         (damaged, "train.parquet: could not be read (ArrowInvalid")]:
        result = CliRunner().invoke(app, ["extract", "--dataset", str(spec), "--model", str(model), "--out",
                                          str(tmp_path / "out"), "--workers", "0"])
        one_line_error(result, needle)
        result = CliRunner().invoke(app, ["train", "--recipe", "simclr_r18_cifar10_cpu", "--data", str(spec),
                                          "--out", str(tmp_path / "run"), "--device", "cpu", "--cache-dir",
                                          str(tmp_path / "cache")])
        one_line_error(result, needle)
    assert not (tmp_path / "out").exists() and not (tmp_path / "run").exists()
    assert snapshot(garbage, damaged, tiny) == before


def test_a_null_label_is_one_line_naming_the_row(tmp_path, model):
    data = tmp_path / "nulls"
    data.mkdir()
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    datasets.Dataset.from_dict({"image": [Image.new("RGB", (8, 8), (i * 40, 0, 0)) for i in range(4)],
                                "label": [0, 1, None, 0]}, features=features).to_parquet(str(data / "test.parquet"))
    for streaming in ([], ["--streaming"]):
        result = CliRunner().invoke(app, ["extract", "--dataset", str(data), "--model", str(model), "--out",
                                          str(tmp_path / "out"), "--workers", "0", *streaming])
        one_line_error(result, "row 2 has no label (null)")


def test_a_feature_shard_whose_recorded_metadata_is_not_json_is_extracted_again(tmp_path, model):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(5):
        Image.open(io.BytesIO(_png(i))).save(images / f"{i}.png")
    out = tmp_path / "out"
    extract_features(images, out=out, model=model, num_workers=0, progress=False, shard_size=2, device="cpu")
    metadata = out / "metadata" / "metadata_1.parquet"
    table = pq.read_table(metadata)
    pq.write_table(table.replace_schema_metadata({b"equimod_zoo": b"{not json"}), metadata)
    (out / "extraction.json").write_text(json.dumps({**json.loads((out / "extraction.json").read_text()),
                                                     "complete": False}))
    summary = extract_features(images, out=out, model=model, num_workers=0, progress=False, shard_size=2,
                               device="cpu")
    assert (summary.shards_skipped, summary.shards_redone) == (2, 1)
    assert len(equimod_zoo.load_features(out)[0]) == 5
