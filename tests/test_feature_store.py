"""The feature store in clip-retrieval's layout, read by faiss unchanged; resume never serves stale results."""
from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from equimod_zoo.cli import app
from equimod_zoo.errors import UserError
from equimod_zoo.extraction.extract import extract_features
from equimod_zoo.extraction.store import load_features, read_info, read_metadata, shard_number


def _photos(folder, count, start=0):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        pixels = np.random.default_rng(i).integers(0, 256, (20 + i % 5, 24, 3), np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:02d}.png")
    return folder


def _extract(source, out, model, **kwargs):
    options = dict(batch_size=4, shard_size=4, num_workers=0, progress=False, precision="fp32")
    return extract_features(source, out=out, model=model, **{**options, **kwargs})


def test_shard_numbers_are_padded_like_clip_retrieval():
    # clip-retrieval: str(partition).zfill(int(log10(partition_count)) + 1)
    assert [shard_number(k, 1) for k in (0,)] == ["0"]
    assert [shard_number(k, 10) for k in (0, 9)] == ["00", "09"]
    assert [shard_number(k, 9) for k in (0, 8)] == ["0", "8"]
    assert shard_number(3, 100) == "003" and shard_number(12, 1000) == "0012"


def test_layout_is_clip_retrievals_and_faiss_finds_each_image(tmp_path, tiny_resnet18_cifar):
    faiss = pytest.importorskip("faiss")
    images = _photos(tmp_path / "images", 10)
    _extract(images, tmp_path / "out", tiny_resnet18_cifar, normalize=True)
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "img_emb").iterdir()) == ["img_emb_0.npy", "img_emb_1.npy", "img_emb_2.npy"]
    assert sorted(p.name for p in (out / "metadata").iterdir()) == [f"metadata_{k}.parquet" for k in range(3)]
    assert (out / "failures.csv").is_file() and (out / "extraction.json").is_file()

    # read the way autofaiss / clip-retrieval do: the .npy and .parquet files in name order, nothing of ours
    embeddings = np.concatenate([np.load(p) for p in sorted((out / "img_emb").glob("*.npy"))])
    metadata = [pq.read_table(p) for p in sorted((out / "metadata").glob("*.parquet"))]
    assert embeddings.dtype == np.float16 and embeddings.shape == (10, 64)
    assert metadata[0].column_names[0] == "image_path"
    paths = [p for table in metadata for p in table.column("image_path").to_pylist()]
    assert paths == sorted(str(p) for p in images.iterdir())

    index = faiss.IndexFlatIP(embeddings.shape[1])
    index.add(embeddings.astype(np.float32))
    _, nearest = index.search(embeddings.astype(np.float32), 1)
    assert nearest[:, 0].tolist() == list(range(10))  # each image's own row is its nearest neighbour

    loaded_paths, features = load_features(out)
    assert loaded_paths == paths
    np.testing.assert_array_equal(features, embeddings.astype(np.float32))


def test_earlier_layout_still_reads(tmp_path, tiny_resnet18_cifar):
    out = tmp_path / "out"
    _extract(_photos(tmp_path / "images", 6), out, tiny_resnet18_cifar)
    paths, features = load_features(out)
    # rewrite it as format 1: features/shard_00000.npy, metadata/shard_00000.parquet with `path`
    info = json.loads((out / "extraction.json").read_text())
    (out / "features").mkdir()
    for k in range(info["num_shards"]):
        os.rename(out / "img_emb" / f"img_emb_{k}.npy", out / "features" / f"shard_{k:05d}.npy")
        table = pq.read_table(out / "metadata" / f"metadata_{k}.parquet")
        table = table.rename_columns(["path" if c == "image_path" else c for c in table.column_names])
        pq.write_table(table, out / "metadata" / f"shard_{k:05d}.parquet")
        os.remove(out / "metadata" / f"metadata_{k}.parquet")
    (out / "extraction.json").write_text(json.dumps({**info, "format": 1}))
    old_paths, old_features = load_features(out)
    assert old_paths == paths
    np.testing.assert_array_equal(old_features, features)
    assert read_metadata(out).column_names[:2] == ["image_path", "index"]


def test_a_changed_image_is_extracted_again(tmp_path, tiny_resnet18_cifar):
    images = _photos(tmp_path / "images", 8)
    first = _extract(images, tmp_path / "out", tiny_resnet18_cifar)
    _, before = load_features(tmp_path / "out")
    # same name, same size, new pixels and a new modification time
    replacement = np.random.default_rng(99).integers(0, 256, (21, 24, 3), np.uint8)
    Image.fromarray(replacement).save(images / "05.png")
    stat = os.stat(images / "05.png")
    os.utime(images / "05.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    again = _extract(images, tmp_path / "out", tiny_resnet18_cifar)
    assert (first.shards_skipped, again.shards_skipped, again.shards_redone) == (0, 1, 1)
    _, after = load_features(tmp_path / "out")
    np.testing.assert_array_equal(after[:4], before[:4])
    assert np.abs(after[5] - before[5]).max() > 0
    _extract(images, tmp_path / "fresh", tiny_resnet18_cifar)
    np.testing.assert_array_equal(after, load_features(tmp_path / "fresh")[1])


@pytest.mark.parametrize("damaged", ["img_emb/img_emb_1.npy", "metadata/metadata_1.parquet"])
def test_a_truncated_shard_is_reported_then_redone(tmp_path, tiny_resnet18_cifar, damaged):
    images = _photos(tmp_path / "images", 8)
    _extract(images, tmp_path / "out", tiny_resnet18_cifar)
    _, reference = load_features(tmp_path / "out")
    path = tmp_path / "out" / damaged
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(UserError, match="incomplete .* missing or damaged, first metadata_1.parquet"):
        load_features(tmp_path / "out")
    again = _extract(images, tmp_path / "out", tiny_resnet18_cifar)
    assert again.shards_redone == 1 and again.shards_skipped == 1
    np.testing.assert_array_equal(load_features(tmp_path / "out")[1], reference)


def test_a_users_own_failures_csv_is_never_overwritten(tmp_path, tiny_resnet18_cifar):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "failures.csv").write_text("my own notes\n")
    with pytest.raises(UserError, match="holds failures.csv and is not an earlier output"):
        _extract(_photos(tmp_path / "images", 2), out, tiny_resnet18_cifar)
    assert (out / "failures.csv").read_text() == "my own notes\n"
    assert sorted(p.name for p in out.iterdir()) == ["failures.csv"]


@pytest.mark.parametrize("info", [[], {"format": 2}, {"format": "2", "num_shards": 1},
                                  {"format": 2, "num_shards": 1, "label_names": "cats"}, {"format": 7, "num_shards": 0}])
def test_extraction_json_of_the_wrong_shape_is_one_line(tmp_path, info):
    (tmp_path / "feats").mkdir()
    (tmp_path / "feats" / "extraction.json").write_text(json.dumps(info))
    with pytest.raises(UserError, match="extraction.json"):
        read_info(tmp_path / "feats")
    result = CliRunner().invoke(app, ["linear", "--train", str(tmp_path / "feats"), "--test", str(tmp_path / "feats")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1 and "extraction.json" in result.output


def test_a_label_too_large_to_allocate_is_refused(tmp_path, tiny_resnet18_cifar):
    from equimod_zoo.data.sources import FileListSource

    images = _photos(tmp_path / "images", 3)
    source = FileListSource(sorted(images.iterdir()), labels=[0, 1, 2**40])
    _extract(source, tmp_path / "out", tiny_resnet18_cifar)
    with pytest.raises(UserError, match=f"label {2**40} is not a class index"):
        read_metadata(tmp_path / "out")
    result = CliRunner().invoke(app, ["linear", "--train", str(tmp_path / "out"), "--test", str(tmp_path / "out")])
    assert result.exit_code == 2 and f"label {2**40}" in result.output and "Traceback" not in result.output
