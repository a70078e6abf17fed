"""Training images: found, decoded once to uint8, and served as per-rank batches on the device.

A data source is one of
- a parquet file, or a folder holding `train.parquet` (or `train-*.parquet` shards), in the
  Hugging Face layout: an Image column (`img` or `image`) and usually a `label`; for example
  ../shared/data/cifar10-jpeg as it is;
- a folder of images in the ImageNet layout (`ROOT/train/CLASS/*.JPEG` or `ROOT/CLASS/*.jpg`),
  read with `datasets`' imagefolder loader;
- a Hugging Face dataset id such as `uoft-cs/cifar10` (needs the Hub, or its local cache).

Every image becomes a `base_size` x `base_size` uint8 tensor (short side resized with bicubic
antialiasing, then centre-cropped): the batched augmentations crop and resize from there on the
device. A dataset that fits `memory_budget` (CIFAR-10: 150 MB) is decoded once into one
[N, 3, S, S] tensor, cached as .npy keyed by the data's content, and indexed directly, so no
image is decoded in the training loop. Larger ones (ImageNet) are decoded by DataLoader
workers, one batch at a time.
"""
from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from torch.utils.data import DataLoader, Dataset

from equimod_zoo.atomic import atomic_open
from equimod_zoo.cache import default_cache_dir
from equimod_zoo.data.resize import resize_to_base
from equimod_zoo.model_folder import sha256_file

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
DEFAULT_MEMORY_BUDGET = 8 << 30  # bytes of decoded uint8 images kept in memory (and on the GPU)
_CACHE_VERSION = 1  # bump when the decoding changes, so stale .npy caches are ignored


@dataclass(frozen=True)
class DataInfo:
    """What a run was trained on, as recorded in its metadata (config.json `equimod.data`)."""

    name: str
    description: str
    num_images: int
    sha256: str  # of the data files (parquet), or of the file listing (imagefolder), or the Hub revision

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DataSource:
    """A located data source: its kind and where it is, before anything is read."""

    kind: str  # "parquet", "imagefolder" or "hub"
    location: str  # a folder, a file or a Hub id
    files: tuple[Path, ...] = ()  # parquet files, in order

    @property
    def name(self) -> str:
        if self.kind == "hub":
            return self.location
        path = Path(self.location)
        return path.stem if path.is_file() else path.name


def resolve_data_source(data: str | Path) -> DataSource:
    """Decide what `data` is: a parquet file or folder, an image folder, or a Hub dataset id."""
    path = Path(data).expanduser()
    if path.is_file():
        if path.suffix != ".parquet":
            raise ValueError(f"--data {path}: a file must be a .parquet file (columns img/image and label)")
        return DataSource("parquet", str(path), (path,))
    if path.is_dir():
        if (path / "train.parquet").is_file():
            return DataSource("parquet", str(path), (path / "train.parquet",))
        shards = sorted(path.glob("train-*.parquet")) or sorted(path.glob("data/train-*.parquet"))
        if shards:
            return DataSource("parquet", str(path), tuple(shards))
        root = path / "train" if (path / "train").is_dir() else path
        if any(child.is_dir() for child in root.iterdir()):
            return DataSource("imagefolder", str(root))
        raise ValueError(
            f"--data {path}: neither a parquet dataset (train.parquet or train-*.parquet) nor an image "
            f"folder (CLASS/IMAGE files, optionally under train/)"
        )
    if str(data).count("/") == 1 and not str(data).startswith((".", "/", "~")):
        return DataSource("hub", str(data))
    raise FileNotFoundError(f"--data {data}: no such file or folder (and not a Hugging Face dataset id owner/name)")


class ImageDataset(Dataset):
    """A `datasets.Dataset` with an undecoded Image column, served as uint8 [3, S, S] tensors."""

    def __init__(self, dataset: Any, *, column: str, base_size: int) -> None:
        self.dataset = dataset
        self.column = column
        self.base_size = base_size

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> torch.Tensor:
        return decode_image(self.dataset[int(index)][self.column], base_size=self.base_size)


def decode_image(image: dict[str, Any], *, base_size: int) -> torch.Tensor:
    """An undecoded `datasets.Image` value ({bytes, path}) to uint8 [3, base_size, base_size]."""
    source = io.BytesIO(image["bytes"]) if image.get("bytes") is not None else image["path"]
    with PIL.Image.open(source) as opened:
        pixels = torch.from_numpy(np.array(opened.convert("RGB"))).permute(2, 0, 1).contiguous()
    return resize_to_base(pixels, base_size)


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
    data: str | Path,
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
        data: a parquet file or folder, an image folder, or a Hugging Face dataset id.
        base_size: the square size every image is stored at before augmentation.
        cache_dir: where the decoded .npy and the `datasets` cache go (default_cache_dir()).
        memory_budget: decode into one in-memory tensor up to this many bytes.
        limit: use only the first `limit` images (quick checks).
        workers: DataLoader workers for the one-off decoding.
    """
    source = resolve_data_source(data)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    dataset, column, info = _open(source, cache)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        dataset = dataset.select(range(min(limit, len(dataset))))
        info = DataInfo(info.name, f"{info.description}; first {len(dataset)} images", len(dataset),
                        info.sha256)
    images = ImageDataset(dataset, column=column, base_size=base_size)
    if len(images) == 0:
        raise ValueError(f"--data {source.location}: no training images")
    if len(images) * 3 * base_size * base_size > memory_budget:
        return TrainData(info=info, base_size=base_size, dataset=images)
    npy = cache / "decoded" / f"{source.kind}-{info.sha256[:24]}-n{len(images)}-{base_size}px-v{_CACHE_VERSION}.npy"
    if npy.is_file():
        array = np.load(npy)
    else:
        array = _decode_all(images, workers=workers, progress=progress)
        with atomic_open(npy, "wb") as handle:
            np.save(handle, array)
    return TrainData(info=info, base_size=base_size, images=torch.from_numpy(array))


def _open(source: DataSource, cache: Path) -> tuple[Any, str, DataInfo]:
    """The source as a `datasets.Dataset` with an undecoded Image column, and its DataInfo."""
    import datasets

    hf_cache = str(cache / "datasets")
    if source.kind == "parquet":
        dataset = datasets.load_dataset("parquet", data_files={"train": [str(f) for f in source.files]},
                                        split="train", cache_dir=hf_cache)
        digest = _files_sha256(source.files)
        # the folder's name, not its absolute path: the description ends up in published cards
        description = f"parquet {', '.join(f.name for f in source.files)} in {Path(source.location).resolve().name}/"
    elif source.kind == "imagefolder":
        dataset = datasets.load_dataset("imagefolder", data_dir=source.location, split="train", cache_dir=hf_cache)
        digest = _listing_sha256(Path(source.location))
        description = (f"image folder {Path(source.location).resolve().name}/ "
                       "(sha256 of the file listing: path and size)")
    else:
        dataset = datasets.load_dataset(source.location, split="train", cache_dir=hf_cache)
        revision = _hub_revision(source.location)
        digest = hashlib.sha256(f"{source.location}@{revision}".encode()).hexdigest()
        description = f"Hugging Face dataset {source.location}, train split, revision {revision}"
    column = _image_column(dataset, source)
    dataset = dataset.cast_column(column, datasets.Image(decode=False))
    info = DataInfo(name=source.name, description=description, num_images=len(dataset), sha256=digest)
    return dataset, column, info


def _image_column(dataset: Any, source: DataSource) -> str:
    import datasets

    columns = [name for name, feature in dataset.features.items() if isinstance(feature, datasets.Image)]
    if not columns:
        raise ValueError(f"--data {source.location}: no Image column (columns: {', '.join(dataset.column_names)})")
    return columns[0]


def _files_sha256(files: tuple[Path, ...]) -> str:
    """One file's own sha256 (so `sha256sum train.parquet` matches); a manifest's for several."""
    digests = [sha256_file(f) for f in files]
    if len(digests) == 1:
        return digests[0]
    manifest = "".join(f"{d}  {f.name}\n" for d, f in zip(digests, files))
    return hashlib.sha256(manifest.encode()).hexdigest()


def _listing_sha256(root: Path) -> str:
    # Hashing every byte of ImageNet (140 GB) would take longer than an epoch; the listing
    # (relative path and size of every image) identifies the data well enough.
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        digest.update(f"{path.relative_to(root).as_posix()}\t{path.stat().st_size}\n".encode())
    return digest.hexdigest()


def _hub_revision(repo_id: str) -> str:
    try:
        import huggingface_hub

        return huggingface_hub.dataset_info(repo_id).sha or "unknown"
    except Exception:  # offline, or a cached dataset: the id alone is all we know
        return "unknown"


def _decode_all(images: ImageDataset, *, workers: int, progress: bool) -> np.ndarray:
    from rich.progress import Progress

    size = images.base_size
    array = np.empty((len(images), 3, size, size), dtype=np.uint8)
    loader = DataLoader(images, batch_size=256, num_workers=workers, shuffle=False)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("decoding images", total=len(images))
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
            raise ValueError(f"batch size {batch_size} is not divisible by the {world_size} processes")
        if num_images < batch_size:
            raise ValueError(f"batch size {batch_size} is larger than the dataset ({num_images} images)")
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
        loader = DataLoader(
            self.data.dataset,
            batch_sampler=indices.tolist(),
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        for batch in loader:
            yield batch.to(self.device, non_blocking=True)
