"""Two gloo ranks extract exactly what one process extracts, listed or streamed, resume per shard, and agree on OUT."""
from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

from equimod_zoo.data.streams import TarShardStream
from equimod_zoo.extraction.distributed import extract_features_distributed, process_group_backend
from equimod_zoo.torchrun import torchrun_world
from equimod_zoo.extraction.extract import extract_features
from equimod_zoo.extraction.store import FeatureStore, load_features, read_info, read_metadata

WORLD_SIZE = 2
OPTIONS = dict(batch_size=2, shard_size=2, num_workers=0, progress=False)


def _tiny_model() -> torch.nn.Module:
    import timm

    import equimod_zoo  # noqa: F401  (registers resnet18_cifar)

    torch.manual_seed(0)
    return timm.create_model("resnet18_cifar", num_classes=0, channels=(8, 16, 32, 64), stem_width=8).eval()


def _images(root: Path) -> Path:
    """A dozen small JPEGs and one bad file: 7 shards of 2, the bad one in shard 3."""
    root.mkdir()
    for i in range(12):
        pixels = np.random.default_rng(i).integers(0, 256, (20 + i, 24, 3), np.uint8)
        Image.fromarray(pixels).save(root / f"img_{i:02d}.jpg")
    (root / "img_06_bad.jpg").write_text("not an image\n")
    return root


def _rank(rank: int, images: str, out: str, init_file: str, results: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE), LOCAL_RANK=str(rank))
    # The caller's own process group: extraction talks over a gloo group of its own beside it.
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        model = _tiny_model()
        first = extract_features_distributed(images, out=out, model=model, device="cpu", **OPTIONS)
        dist.barrier()
        if rank == 0:  # rank 1 "died" writing shard 3: its metadata never landed, a temporary file did
            store = FeatureStore(out)
            store.metadata_path(3).unlink()
            store.metadata_path(3).with_name(".partial.tmp").write_bytes(b"half")
            info = read_info(out)
            (Path(out) / "extraction.json").write_text(json.dumps({**info, "complete": False}))
        dist.barrier()
        second = extract_features_distributed(images, out=out, model=model, device="cpu", **OPTIONS)
        summaries = [(s.num_images, s.num_extracted, s.num_failed, s.num_shards, s.shards_skipped)
                     for s in (first, second)]
        Path(results, f"rank{rank}.json").write_text(json.dumps(summaries))
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_match_one_process_and_resume(tmp_path):
    images = _images(tmp_path / "images")
    single = extract_features(images, out=tmp_path / "single", model=_tiny_model(), **OPTIONS)
    mp.spawn(_rank, args=(str(images), str(tmp_path / "ranks"), str(tmp_path / "init"), str(tmp_path)),
             nprocs=WORLD_SIZE, join=True)

    for rank in range(WORLD_SIZE):
        first, second = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert first == [13, 12, 1, 7, 0]
        assert second == [13, 12, 1, 7, 6]  # only the broken shard was extracted again
    assert (single.num_images, single.num_extracted, single.num_failed, single.num_shards) == (13, 12, 1, 7)

    paths, features = load_features(tmp_path / "ranks")
    single_paths, single_features = load_features(tmp_path / "single")
    assert paths == single_paths and len(paths) == 12
    np.testing.assert_array_equal(features, single_features)
    assert read_metadata(tmp_path / "ranks").equals(read_metadata(tmp_path / "single"))
    assert (tmp_path / "ranks" / "failures.csv").read_text() == (tmp_path / "single" / "failures.csv").read_text()
    info, single_info = read_info(tmp_path / "ranks"), read_info(tmp_path / "single")
    assert info["complete"] and (info["num_extracted"], info["num_failed"]) == (12, 1)
    assert info == single_info


def _tar_shards(root: Path) -> str:
    """Three webdataset shards of 4, 3 and 5 samples (one undecodable): a brace pattern over them."""
    root.mkdir()
    index = 0
    for shard, size in enumerate((4, 3, 5)):
        with tarfile.open(root / f"{shard:05d}.tar", "w") as tar:
            for _ in range(size):
                pixels = np.random.default_rng(index).integers(0, 256, (18, 22, 3), np.uint8)
                buffer = io.BytesIO()
                Image.fromarray(pixels).save(buffer, "PNG")
                data = b"broken" if index == 5 else buffer.getvalue()
                member = tarfile.TarInfo(f"s{index:03d}.png")
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
                index += 1
    return str(root / "{00000..00002}.tar")


def _streaming_rank(rank: int, pattern: str, out: str, init_file: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE), LOCAL_RANK=str(rank))
    extract_features_distributed(TarShardStream(pattern), out=out, model=_tiny_model(), device="cpu",
                                 init_method=f"file://{init_file}", **OPTIONS)


def test_two_gloo_ranks_stream_tar_shards_like_one_process(tmp_path):
    pattern = _tar_shards(tmp_path / "tars")
    single = extract_features(TarShardStream(pattern), out=tmp_path / "single", model=_tiny_model(), **OPTIONS)
    mp.spawn(_streaming_rank, args=(pattern, str(tmp_path / "ranks"), str(tmp_path / "init")),
             nprocs=WORLD_SIZE, join=True)

    assert (single.num_images, single.num_extracted, single.num_failed) == (12, 11, 1)
    paths, features = load_features(tmp_path / "ranks")
    single_paths, single_features = load_features(tmp_path / "single")
    assert paths == single_paths and len(paths) == 11
    np.testing.assert_array_equal(features, single_features)
    assert read_metadata(tmp_path / "ranks").equals(read_metadata(tmp_path / "single"))
    info = read_info(tmp_path / "ranks")
    assert info["complete"] and info["input"]["streamed"] and (info["num_extracted"], info["num_failed"]) == (11, 1)


def test_ranks_on_gpus_talk_over_nccl_and_cpu_ranks_over_gloo():
    assert process_group_backend(torch.device("cpu")) == "gloo"
    if dist.is_nccl_available():
        assert process_group_backend(torch.device("cuda", 1)) == "nccl"


def test_without_torchrun_it_is_one_process(tmp_path, monkeypatch, tiny_resnet18_cifar):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert torchrun_world() == (0, 1, 0)
    images = _images(tmp_path / "images")
    summary = extract_features_distributed(images, out=tmp_path / "out", model=tiny_resnet18_cifar, **OPTIONS)
    assert (summary.num_extracted, summary.num_failed, summary.num_shards) == (12, 1, 7)
    assert not dist.is_initialized()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match=r"RANK=2 is not in \[0, WORLD_SIZE=2\)"):
        torchrun_world()
