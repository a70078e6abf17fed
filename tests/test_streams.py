"""Inputs people have (issue 14), streamed (issue 16): file lists, webdataset tar shards, streamed datasets, --limit."""
from __future__ import annotations

import io
import tarfile
import tracemalloc

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import equimod_zoo
from equimod_zoo.cli import app
from equimod_zoo.data.spec import open_split
from equimod_zoo.data.streams import (ConcatStream, FileListStream, SourceStream, TarShardStream, expand_braces,
                                      image_inputs, limited)
from equimod_zoo.data.sources import FileListSource
from equimod_zoo.extraction.extract import extract_features
from equimod_zoo.extraction.store import read_info, read_metadata
from equimod_zoo.model_folder import write_model_folder


def _png(seed: int, size=(12, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _tar(path, samples: dict[str, dict[str, bytes]]) -> None:
    """A webdataset shard: each sample's members (KEY.EXT) one after the other."""
    with tarfile.open(path, "w") as tar:
        for key, members in samples.items():
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def shards(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    _tar(folder / "00000.tar", {"a/000": {"jpg": _png(0), "cls": b"3", "txt": b"cat"}, "a/001": {"png": _png(1)}})
    _tar(folder / "00001.tar", {"b/002": {"txt": b"caption only"}, "b/003": {"webp": b"not an image"},
                                "b/004": {"png": _png(4)}})
    return folder


def test_brace_patterns_expand_like_bash():
    assert expand_braces("s/{00000..00002}.tar") == ["s/00000.tar", "s/00001.tar", "s/00002.tar"]
    assert expand_braces("{a,b}-{8..10}") == ["a-8", "a-9", "a-10", "b-8", "b-9", "b-10"]
    assert expand_braces("plain.tar") == ["plain.tar"]


def test_tar_shards_give_each_sample_keyed_by_its_key(shards):
    stream = TarShardStream(str(shards / "{00000..00001}.tar"))
    assert stream.count() == 5
    chunks = list(stream.chunks(2))
    assert [len(c) for c in chunks] == [2, 2, 1]
    keys = [c.key(i) for c in chunks for i in range(len(c))]
    assert keys == ["a/000", "a/001", "b/002", "b/003", "b/004"]
    assert np.asarray(chunks[0].open(1).convert("RGB")).tobytes() == np.asarray(
        Image.open(io.BytesIO(_png(1))).convert("RGB")).tobytes()
    with pytest.raises(ValueError, match="no image member in the sample"):
        chunks[1].open(0)
    with pytest.raises(FileNotFoundError, match="00002.tar: no such tar shard"):
        TarShardStream(str(shards / "{00000..00002}.tar"))


def test_extract_reads_tar_shards_one_shard_at_a_time(shards, tmp_path, tiny_resnet18_cifar):
    summary = extract_features(TarShardStream(str(shards / "{00000..00001}.tar")), out=tmp_path / "out",
                               model=tiny_resnet18_cifar, shard_size=2, batch_size=2, num_workers=0, progress=False)
    assert (summary.num_images, summary.num_extracted, summary.num_failed, summary.num_shards) == (5, 3, 2, 3)
    table = read_metadata(tmp_path / "out").to_pydict()
    assert table["image_path"] == ["a/000", "a/001", "b/004"] and table["index"] == [0, 1, 4]
    failures = (tmp_path / "out" / "failures.csv").read_text()
    assert "b/002" in failures and "b/003" in failures
    assert read_info(tmp_path / "out")["input"]["streamed"] is True
    again = extract_features(TarShardStream(str(shards / "{00000..00001}.tar")), out=tmp_path / "out",
                             model=tiny_resnet18_cifar, shard_size=2, batch_size=2, num_workers=0, progress=False)
    assert again.shards_skipped == 3  # resumed shard by shard, nothing decoded again


def test_streamed_and_listed_features_are_the_same(tmp_path, tiny_resnet18_cifar):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(5):
        (folder / f"{i}.png").write_bytes(_png(10 + i))
    options = dict(model=tiny_resnet18_cifar, shard_size=2, batch_size=2, num_workers=0, progress=False)
    extract_features(folder, out=tmp_path / "listed", **options)
    extract_features(SourceStream(FileListSource(sorted(folder.iterdir()))), out=tmp_path / "streamed", **options)
    listed, streamed = (equimod_zoo.load_features(tmp_path / name) for name in ("listed", "streamed"))
    assert listed[0] == streamed[0]
    np.testing.assert_array_equal(listed[1], streamed[1])


def test_a_list_file_one_path_a_line(tmp_path):
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        (tmp_path / "imgs" / f"{i}.png").write_bytes(_png(i))
    (tmp_path / "list.txt").write_text(f"imgs/0.png\n\n# a comment\n{tmp_path / 'imgs' / '2.png'}\nimgs/missing.png\n")
    stream = FileListStream(tmp_path / "list.txt")
    assert stream.count() == 3
    (chunk,) = stream.chunks(10)
    assert [chunk.key(i) for i in range(3)] == [str(tmp_path / "imgs" / n) for n in ("0.png", "2.png", "missing.png")]
    with pytest.raises(FileNotFoundError):
        chunk.open(2)


def test_several_inputs_make_one_and_limit_cuts_it(tmp_path, shards):
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        (tmp_path / "imgs" / f"{i}.png").write_bytes(_png(i))
    (tmp_path / "list.txt").write_text("imgs/1.png\n")
    files = image_inputs([str(tmp_path / "imgs" / "0.png"), str(tmp_path / "imgs" / "2.png")])
    assert isinstance(files, FileListSource) and len(files) == 2
    mixed = image_inputs([str(tmp_path / "imgs"), str(tmp_path / "list.txt"), str(shards / "{00000..00001}.tar")])
    assert isinstance(mixed, ConcatStream) and mixed.count() == 3 + 1 + 5
    chunks = list(mixed.chunks(4))
    assert [len(c) for c in chunks] == [4, 4, 1]  # every chunk full, across the inputs' borders
    assert chunks[0].key(3) == str(tmp_path / "imgs" / "1.png") and chunks[1].key(0) == "a/000"
    cut = limited(mixed, 6)
    assert cut.count() == 6 and [len(c) for c in cut.chunks(4)] == [4, 2]
    assert len(limited(files, 1)) == 1
    with pytest.raises(ValueError, match="--images: empty path"):
        image_inputs([""])


def test_a_local_parquet_in_streaming_mode(tmp_path, tiny_resnet18_cifar):
    import datasets

    rng = np.random.default_rng(0)
    folder = tmp_path / "pq"
    folder.mkdir()
    table = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(rng.integers(0, 256, (8, 8, 3), np.uint8)) for _ in range(5)],
         "label": [0, 1, 0, 1, 1]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])}))
    table.to_parquet(str(folder / "test.parquet"))
    stream = open_split(folder, "test", streaming=True, cache_dir=tmp_path / "cache")
    assert stream.count() == 5 and stream.label_names == ["a", "b"] and stream.labelled
    options = dict(model=tiny_resnet18_cifar, shard_size=2, batch_size=2, num_workers=0, progress=False)
    extract_features(stream, out=tmp_path / "streamed", **options)
    # streamed: the split is read as it is, never copied into the datasets cache as arrow
    assert not list(tmp_path.rglob("*.arrow"))
    extract_features(open_split(folder, "test", cache_dir=tmp_path / "cache"), out=tmp_path / "loaded", **options)
    streamed, loaded = (read_metadata(tmp_path / name).to_pydict() for name in ("streamed", "loaded"))
    assert streamed["image_path"] == loaded["image_path"] == [f"test/{i}" for i in range(5)]
    assert streamed["label"] == loaded["label"] == [0, 1, 0, 1, 1]
    np.testing.assert_array_equal(*(equimod_zoo.load_features(tmp_path / n)[1] for n in ("streamed", "loaded")))


def test_tar_headers_are_forgotten_as_they_are_read(tmp_path):
    count = 3000
    with tarfile.open(tmp_path / "big.tar", "w") as tar:
        for i in range(count):
            info = tarfile.TarInfo(f"{i:06d}.png")
            info.size = 4
            tar.addfile(info, io.BytesIO(b"\x89PNG"))
    stream = TarShardStream(str(tmp_path / "big.tar"))
    tracemalloc.start()
    seen = sum(1 for _ in stream.items())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert seen == count and peak < 200_000  # a few headers at a time; all 3000 TarInfo objects take ~1.3 MB


def test_cli_extracts_a_list_and_shards_with_a_limit(tmp_path, shards, tiny_resnet18_cifar):
    write_model_folder(tmp_path / "model", tiny_resnet18_cifar, arch="resnet18_cifar",
                       model_args={"channels": (8, 16, 32, 64), "stem_width": 8})
    (tmp_path / "one.png").write_bytes(_png(7))
    (tmp_path / "list.txt").write_text("one.png\n")
    result = CliRunner().invoke(app, ["extract", "--images", str(tmp_path / "list.txt"), "--images",
                                      str(shards / "{00000..00001}.tar"), "--limit", "3", "--model",
                                      str(tmp_path / "model"), "--out", str(tmp_path / "out"), "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "3 of 3 images" in result.output
    assert read_metadata(tmp_path / "out").column("image_path").to_pylist() == [str(tmp_path / "one.png"), "a/000",
                                                                               "a/001"]


def test_cli_takes_the_shells_expansion_of_a_shard_pattern(tmp_path, shards, tiny_resnet18_cifar):
    write_model_folder(tmp_path / "model", tiny_resnet18_cifar, arch="resnet18_cifar",
                       model_args={"channels": (8, 16, 32, 64), "stem_width": 8})
    expanded = [str(shards / "00000.tar"), str(shards / "00001.tar")]  # bash: --images shards/{00000..00001}.tar
    result = CliRunner().invoke(app, ["extract", "--images", *expanded, "--model", str(tmp_path / "model"),
                                      "--out", str(tmp_path / "out"), "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "3 of 5 images" in result.output
