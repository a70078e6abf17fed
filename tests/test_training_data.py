"""Training data: parquet / image folders decoded once to uint8, cached, and sampled per rank."""
from __future__ import annotations

import datasets
import numpy as np
import PIL.Image
import pytest
import torch

import equimod_zoo.training.data as data_module
from equimod_zoo.model_folder import sha256_file
from equimod_zoo.data.spec import resolve_spec
from equimod_zoo.training.data import BatchLoader, EpochSampler, load_train_data


def write_parquet(folder, pixels: np.ndarray, *, column: str = "img"):
    """A train.parquet with the Hugging Face CIFAR-10 schema (Image column + ClassLabel)."""
    folder.mkdir(parents=True, exist_ok=True)
    features = datasets.Features({column: datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
    table = datasets.Dataset.from_dict(
        {column: [PIL.Image.fromarray(p) for p in pixels], "label": [i % 10 for i in range(len(pixels))]},
        features=features)
    table.to_parquet(str(folder / "train.parquet"))
    return folder


@pytest.fixture
def pixels():
    return np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)


def test_parquet_folder_decodes_exactly_and_records_its_sha256(tmp_path, pixels):
    folder = write_parquet(tmp_path / "cifar", pixels)
    data = load_train_data(folder, base_size=32, cache_dir=tmp_path / "cache", progress=False)
    assert data.in_memory and data.images.dtype == torch.uint8
    assert data.images.shape == (20, 3, 32, 32)
    assert torch.equal(data.images, torch.from_numpy(pixels).permute(0, 3, 1, 2))  # PNG: lossless
    assert data.info.name == "cifar" and data.info.num_images == 20 and len(data.info.sha256) == 64
    # cards quote the description: it names the folder, never where it lives on this machine
    assert data.info.description.startswith("parquet train.parquet in cifar/") and str(tmp_path) not in \
        data.info.description


def test_the_datas_identity_is_its_images_and_labels_not_the_file(tmp_path, pixels):
    import pyarrow.parquet as pq

    folder = write_parquet(tmp_path / "cifar", pixels)
    before = load_train_data(folder, base_size=32, cache_dir=tmp_path / "cache", progress=False).info.sha256
    table = pq.read_table(folder / "train.parquet")
    recompressed = tmp_path / "zstd" / "train.parquet"  # the same rows, another codec and row groups
    recompressed.parent.mkdir()
    pq.write_table(table, recompressed, compression="zstd", row_group_size=7)
    assert sha256_file(recompressed) != sha256_file(folder / "train.parquet")
    assert load_train_data(recompressed.parent, base_size=32, cache_dir=tmp_path / "cache",
                           progress=False).info.sha256 == before
    relabelled = tmp_path / "relabelled"  # one label changed: other data
    write_parquet(relabelled, pixels)
    labels = pq.read_table(relabelled / "train.parquet")
    column = labels.column("label").to_pylist()
    column[3] = (column[3] + 1) % 10
    pq.write_table(labels.set_column(labels.schema.get_field_index("label"), "label",
                                     __import__("pyarrow").array(column, type=labels.schema.field("label").type)),
                   relabelled / "train.parquet")
    assert load_train_data(relabelled, base_size=32, cache_dir=tmp_path / "cache2",
                           progress=False).info.sha256 != before
    first = load_train_data(folder, base_size=32, cache_dir=tmp_path / "cache", progress=False, limit=10).info
    assert first.sha256 != before and first.num_images == 10  # the first 10 images are what was trained on


def test_decoded_images_are_cached_and_reused(tmp_path, pixels, monkeypatch):
    folder = write_parquet(tmp_path / "cifar", pixels)
    first = load_train_data(folder, base_size=32, cache_dir=tmp_path / "cache", progress=False)
    assert len(list((tmp_path / "cache" / "decoded").glob("*.npy"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(data_module, "_decode_all", no_decoding)
    again = load_train_data(folder, base_size=32, cache_dir=tmp_path / "cache", progress=False)
    assert torch.equal(first.images, again.images)


def test_other_sizes_are_resized_and_centre_cropped(tmp_path):
    wide = np.zeros((2, 20, 40, 3), dtype=np.uint8)
    wide[:, :, 10:30] = 255  # a white centre band, as wide as the crop
    folder = write_parquet(tmp_path / "wide", wide, column="image")
    data = load_train_data(folder, base_size=10, cache_dir=tmp_path / "cache", progress=False, limit=1)
    assert data.images.shape == (1, 3, 10, 10) and len(data) == 1
    assert data.images.float().mean() > 240  # the centre square of the resized image is the white band


def test_image_folder_is_read_and_streamed_when_too_large(tmp_path, pixels):
    root = tmp_path / "imagenet" / "train"
    for index, image in enumerate(pixels[:6]):
        (root / f"class{index % 2}").mkdir(parents=True, exist_ok=True)
        PIL.Image.fromarray(image).save(root / f"class{index % 2}" / f"{index}.png")
    source = resolve_spec(tmp_path / "imagenet", option="--data")
    assert source.layout == "imagefolder"
    streamed = load_train_data(tmp_path / "imagenet", base_size=32, cache_dir=tmp_path / "cache",
                               memory_budget=0, progress=False)
    assert not streamed.in_memory and len(streamed) == 6
    in_memory = load_train_data(tmp_path / "imagenet", base_size=32, cache_dir=tmp_path / "cache", progress=False)
    sampler = EpochSampler(6, batch_size=3, seed=1)
    cpu = torch.device("cpu")
    a = list(BatchLoader(streamed, sampler, device=cpu).epoch(0))
    b = list(BatchLoader(in_memory, sampler, device=cpu).epoch(0))
    assert len(a) == 2 and all(torch.equal(x, y) for x, y in zip(a, b))
    assert sorted(img.float().sum().item() for img in in_memory.images) == sorted(
        float(p.astype(np.float64).sum()) for p in pixels[:6])


def test_bad_sources_get_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        resolve_spec(tmp_path / "absent", option="--data")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a parquet dataset"):
        resolve_spec(tmp_path / "empty", option="--data")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match=r"x.csv: a dataset file must be a .parquet"):
        resolve_spec(tmp_path / "x.csv", option="--data")
    assert resolve_spec("uoft-cs/cifar10", option="--data").layout == "hub"


def test_epoch_sampler_gives_each_rank_a_disjoint_seeded_share():
    ranks = [EpochSampler(103, batch_size=12, seed=7, rank=r, world_size=4) for r in range(4)]
    assert ranks[0].steps_per_epoch == 8 and ranks[0].local_batch_size == 3
    shares = [s.indices(epoch=2) for s in ranks]
    everything = torch.cat([s.flatten() for s in shares])
    assert everything.unique().numel() == everything.numel() == 96  # disjoint, last partial batch dropped
    assert torch.equal(shares[1], EpochSampler(103, batch_size=12, seed=7, rank=1, world_size=4).indices(2))
    assert not torch.equal(shares[1], ranks[1].indices(3))
    with pytest.raises(ValueError, match="not divisible"):
        EpochSampler(100, batch_size=10, seed=0, world_size=3)
    with pytest.raises(ValueError, match="larger than the dataset"):
        EpochSampler(5, batch_size=8, seed=0)


def test_batch_loader_resumes_mid_epoch():
    images = torch.arange(24, dtype=torch.uint8).view(24, 1, 1, 1).expand(24, 3, 2, 2).contiguous()
    data = data_module.TrainData(info=data_module.DataInfo("toy", "", 24, "0" * 64), base_size=2, images=images)
    loader = BatchLoader(data, EpochSampler(24, batch_size=4, seed=0), device=torch.device("cpu"))
    full = list(loader.epoch(1))
    tail = list(loader.epoch(1, start_step=4))
    assert len(full) == 6 and all(torch.equal(a, b) for a, b in zip(full[4:], tail))


def test_shared_cifar10_parquet_as_it_is(shared_data, tmp_path):
    folder = shared_data / "cifar10-jpeg"
    data = load_train_data(folder, base_size=32, cache_dir=tmp_path / "cache", limit=64, progress=False)
    assert data.images.shape == (64, 3, 32, 32) and data.images.dtype == torch.uint8
    assert data.info.sha256 != sha256_file(folder / "train.parquet")  # the content's, not the file's
    assert data.info.name == "cifar10-jpeg" and data.info.num_images == 64
    assert 60 < data.images.float().mean() < 200  # real photographs, not blank decodes
