"""Training images: found, decoded once to uint8, and served as per-rank batches on the device.

`--data` is a dataset spec (the grammar is in `equimod_zoo.data`): a parquet file or folder in
the Hugging Face layout (e.g. $EQUIMOD_DATA/cifar10-jpeg as it is), an image folder
(`ROOT/train/CLASS/*.JPEG` or `ROOT/CLASS/*.jpg`), a CUB_200_2011 folder, a known name such as
`cifar10`, or a Hub id. Training reads its `train` split (or the only split there is).

Every image is decoded by the data layer's one decoder (EXIF rotation, alpha on white, 16-bit
scaled, CMYK converted, decompression bombs refused) and becomes a `base_size` x `base_size`
uint8 tensor (short side resized with bicubic antialiasing, then centre-cropped): the batched
augmentations crop and resize from there on the device. A dataset that fits `memory_budget`
(CIFAR-10: 150 MB) is decoded once into one [N, 3, S, S] tensor, cached as .npy keyed by the
data's content (the bytes of every file: an image edited in place is never served from the cache),
and indexed directly, so no image is decoded in the training loop. Larger ones
(ImageNet) are decoded by DataLoader workers, one batch at a time.
"""
from __future__ import annotations

import hashlib
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from equimod_zoo.atomic import atomic_open
from equimod_zoo.cache import default_cache_dir
from equimod_zoo.data.images import pixels_at_base
from equimod_zoo.data.sources import FirstImages, ImageSource
from equimod_zoo.data.spec import DataSpec, choose_split, open_split, parquet_files, resolve_spec
from equimod_zoo.data.workers import UserErrorLoader
from equimod_zoo.errors import UserError
from equimod_zoo.model_folder import sha256_file

DEFAULT_MEMORY_BUDGET = 8 << 30  # bytes of decoded uint8 images kept in memory (and on the GPU)
# Bump when the decoding changes, so stale .npy caches are ignored. 2: the data layer's decoder
# (EXIF rotation, alpha on white, 16-bit scaling) instead of a bare convert("RGB").
_CACHE_VERSION = 2
_HASH_THREADS = 8  # files hashed at once when fingerprinting an image folder


@dataclass(frozen=True)
class DataInfo:
    """What a run was trained on, as recorded in its metadata (config.json `equimod.data`)."""

    name: str
    description: str
    num_images: int
    sha256: str  # of the images' bytes and labels (parquet), of every image's path and bytes (image folders), or the Hub revision

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ImageDataset(Dataset):
    """An image source served as uint8 [3, S, S] tensors, decoded by the data layer's decoder."""

    def __init__(self, source: ImageSource, *, base_size: int) -> None:
        self.source = source
        self.base_size = base_size

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> torch.Tensor:
        try:
            return pixels_at_base(lambda: self.source.open(int(index)), self.base_size)
        except Exception as error:  # name the image: a training set with a bad file is the user's to fix
            raise UserError(f"training image {self.source.key(int(index))}: {type(error).__name__}: {error}") from None


@dataclass
class TrainData:
    """Training images at `base_size`: in memory as one uint8 tensor, or decoded on the fly."""

    info: DataInfo
    base_size: int
    images: torch.Tensor | None = None  # [N, 3, S, S] uint8, when the dataset fits in memory
    dataset: ImageDataset | None = None  # otherwise, decoded by DataLoader workers

    def __len__(self) -> int:
        return self.info.num_images

    @property
    def in_memory(self) -> bool:
        return self.images is not None


def load_train_data(
    data: str | Path | DataSpec,
    *,
    base_size: int,
    cache_dir: str | Path | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    limit: int | None = None,
    workers: int = 0,
    progress: bool = True,
) -> TrainData:
    """Find, fingerprint and (when it fits `memory_budget`) decode the training split of `data`.

    Args:
        data: a dataset spec (see `equimod_zoo.data`): a parquet file or folder, an image
            folder, a CUB_200_2011 folder, a known name or a Hugging Face dataset id (or a
            DataSpec resolved already, e.g. with `allow_outside_paths`).
        base_size: the square size every image is stored at before augmentation.
        cache_dir: where the decoded .npy and the `datasets` cache go (default_cache_dir()).
        memory_budget: decode into one in-memory tensor up to this many bytes.
        limit: use only the first `limit` images (quick checks).
        workers: DataLoader workers for the one-off decoding.
    """
    if limit is not None and limit < 1:
        raise UserError(f"limit must be >= 1, got {limit}")
    spec = resolve_spec(data, option="--data")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    source, info = _open(spec, cache, limit=limit)
    if limit is not None:
        source = FirstImages(source, limit)
        info = DataInfo(info.name, f"{info.description}; first {len(source)} images", len(source), info.sha256)
    images = ImageDataset(source, base_size=base_size)
    if len(images) == 0:
        raise UserError(f"--data {spec.spec}: no training images")
    if len(images) * 3 * base_size * base_size > memory_budget:
        return TrainData(info=info, base_size=base_size, dataset=images)
    npy = cache / "decoded" / f"{spec.layout}-{info.sha256[:24]}-n{len(images)}-{base_size}px-v{_CACHE_VERSION}.npy"
    if npy.is_file():
        array = np.load(npy)
    else:
        array = _decode_all(images, workers=workers, progress=progress)
        with atomic_open(npy, "wb") as handle:
            np.save(handle, array)
    return TrainData(info=info, base_size=base_size, images=torch.from_numpy(array))


def _open(spec: DataSpec, cache: Path, *, limit: int | None = None) -> tuple[ImageSource, DataInfo]:
    """The training split of `spec` (`train`, or the only split) as an image source, and its DataInfo
    (of the first `limit` images: what the run trains on)."""
    hf_cache = cache / "datasets"
    split = choose_split(spec, None, prefer="train", cache_dir=hf_cache) if spec.layout != "hub" else "train"
    source = open_split(spec, split, cache_dir=hf_cache)
    location = Path(spec.location)
    # folder names, never absolute paths: the description ends up in published cards
    folder = location.name if location.is_dir() else location.parent.name
    if spec.layout == "parquet":
        files = tuple(parquet_files(spec, split))
        digest = _parquet_content_sha256(files, image_column=source.image_column, label_column=source.label_column,
                                         limit=limit)
        description = f"parquet {', '.join(f.name for f in files)} in {folder}/ (sha256 of the image bytes and labels)"
    elif spec.layout in ("imagefolder", "cub"):
        root = location / "images" if spec.layout == "cub" else (
            location / split if (location / split).is_dir() else location)
        digest = _content_sha256(source.paths, root)
        kind = "image folder" if spec.layout == "imagefolder" else "CUB_200_2011 folder"
        description = f"{kind} {folder}/ (sha256 of every image's path and bytes)"
    else:
        revision = _hub_revision(spec.location)
        digest = hashlib.sha256(f"{spec.location}@{revision}".encode()).hexdigest()
        description = f"Hugging Face dataset {spec.location}, train split, revision {revision}"
    return source, DataInfo(name=spec.name, description=description, num_images=len(source), sha256=digest)


def _parquet_content_sha256(files: tuple[Path, ...], *, image_column: str, label_column: str | None,
                            limit: int | None) -> str:
    """The data's identity is its content: each row's image bytes and label, in order, so that rewriting the
    parquet files (another compression, other row groups, other file names) keeps it."""
    import pyarrow.parquet as pq

    digest = hashlib.sha256()
    left = limit
    columns = [image_column, *([label_column] if label_column else [])]
    for path in files:
        for batch in pq.ParquetFile(path).iter_batches(columns=columns, batch_size=4096):
            if left is not None and left <= 0:
                return digest.hexdigest()
            batch = batch.slice(0, left) if left is not None else batch
            labels = batch.column(1).to_pylist() if label_column else [None] * batch.num_rows
            for cell, label in zip(batch.column(0).to_pylist(), labels):
                content = cell.get("bytes") or (cell.get("path") or "").encode() if isinstance(cell, dict) else cell
                content = content or b""
                digest.update(f"{len(content)}:".encode() + content + f"\t{label}\n".encode())
            if left is not None:
                left -= batch.num_rows
    return digest.hexdigest()


def _content_sha256(paths: list[str], root: Path) -> str:
    """The sha256 of every image's path below `root` and of its bytes.

    This keys the decoded cache and is what `--resume` compares, so it must change whenever a pixel
    can: a listing of paths and sizes (or mtimes) misses an image edited in place at the same size,
    with its mtime put back (`touch -r`, `rsync -t`, `tar -x`), and the old pixels would be trained
    on. A stat key that no user can put back (ctime, inode) would catch that, but it changes with
    every copy of the data, and a run must resume on a fresh copy of it (another node, a restored
    backup). So the bytes are read: that costs less than decoding them, which the first run does
    anyway, and for ImageNet (140 GB) a minute or two at disk speed beside hours of training.
    """
    ordered = sorted(Path(p) for p in paths)
    digest = hashlib.sha256()
    with ThreadPoolExecutor(max_workers=_HASH_THREADS) as pool:  # hashlib releases the GIL: reads overlap
        for path, file_digest in zip(ordered, pool.map(_file_sha256, ordered)):
            relative = os.fsencode(path.relative_to(root).as_posix()).decode("utf-8", "backslashreplace")
            digest.update(f"{relative}\t{file_digest}\n".encode())
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    """A regular file's sha256; what anything else is (a FIFO must not be read: it would block)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as error:  # a dangling link: it fails when decoded, and is part of the data as it is
        return f"unreadable: {error.strerror}"
    return sha256_file(path) if stat.S_ISREG(mode) else "not a regular file"


def _hub_revision(repo_id: str) -> str:
    try:
        import huggingface_hub

        return huggingface_hub.dataset_info(repo_id).sha or "unknown"
    except Exception:  # offline, or a cached dataset: the id alone is all we know
        return "unknown"


def _decode_all(images: ImageDataset, *, workers: int, progress: bool) -> np.ndarray:
    from equimod_zoo.progress import progress_bar

    size = images.base_size
    array = np.empty((len(images), 3, size, size), dtype=np.uint8)
    loader = UserErrorLoader(images, batch_size=256, num_workers=workers, shuffle=False)
    with progress_bar(enabled=progress, unit="img", transient=True) as bar:
        task = bar.add_task(f"decode the {len(images)} training images at {size} px", total=len(images))
        start = 0
        for batch in loader:
            array[start:start + len(batch)] = batch.numpy()
            start += len(batch)
            bar.advance(task, len(batch))
    return array


class EpochSampler:
    """A seeded permutation per epoch, cut into global batches; each rank gets its disjoint share.

    The permutation depends only on (seed, epoch), so resuming at (epoch, step) needs no saved
    state. The last incomplete global batch is dropped, so every rank runs the same number of steps.
    """

    def __init__(self, num_images: int, *, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if batch_size % world_size:
            raise UserError(f"batch size {batch_size} is not divisible by the {world_size} processes")
        if num_images < batch_size:
            raise UserError(f"batch size {batch_size} is larger than the dataset ({num_images} images)")
        self.num_images = num_images
        self.batch_size = batch_size
        self.local_batch_size = batch_size // world_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size

    @property
    def steps_per_epoch(self) -> int:
        return self.num_images // self.batch_size

    def indices(self, epoch: int) -> torch.Tensor:
        """[steps_per_epoch, local_batch_size] image indices of this rank for `epoch`."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.num_images, generator=generator)[: self.steps_per_epoch * self.batch_size]
        return order.view(self.steps_per_epoch, self.world_size, self.local_batch_size)[:, self.rank]


class BatchLoader:
    """uint8 image batches on `device` for one epoch, starting at any step of it."""

    def __init__(self, data: TrainData, sampler: EpochSampler, *, device: torch.device, workers: int = 0) -> None:
        self.data = data
        self.sampler = sampler
        self.device = device
        self.workers = workers
        # CIFAR-sized data lives on the device: a batch is one index_select, no host round trip.
        self.images = data.images.to(device) if data.in_memory else None

    def epoch(self, epoch: int, *, start_step: int = 0) -> Iterator[torch.Tensor]:
        indices = self.sampler.indices(epoch)[start_step:]
        if self.images is not None:
            indices = indices.to(self.device, non_blocking=True)
            for batch in indices:
                yield self.images.index_select(0, batch)
            return
        loader = UserErrorLoader(
            self.data.dataset,
            batch_sampler=indices.tolist(),
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        for batch in loader:
            yield batch.to(self.device, non_blocking=True)
