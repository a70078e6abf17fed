"""`extract_features`: images in, one pooled feature vector per image out, in a resumable store.

The pipeline is the one timm prescribes (the model's own data config through
`timm.data.create_transform`), run fast: DataLoader workers decode and resize while the model
computes, a timm model runs as its pre-logits with BatchNorm folded into the convolutions,
channels-last, under inference mode and mixed precision (bf16 on CPUs with AMX or
AVX512-BF16, fp16/bf16 on GPUs), and large JPEGs decode at a reduced DCT scale. On a bf16
CPU, when there are enough images to pay for it, the network also goes through `torch.compile`.
Bad images are recorded in OUT/failures.csv and never stop the run.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import timm.data
import torch
import torch.nn.functional as F
from torch.fx.experimental.optimization import fuse

from equimod_zoo.cache import file_state
from equimod_zoo.constants import DEFAULT_MODEL, DEFAULT_SHARD_SIZE
from equimod_zoo.data.images import IMAGE_EXTENSIONS, load_rgb
from equimod_zoo.data.sources import ImageSource, folder_source
from equimod_zoo.data.streams import ImageStream, OffsetSource
from equimod_zoo.devices import cpu_has_fast_bf16, resolve_device
from equimod_zoo.errors import NonFiniteFeaturesError, UserError
from equimod_zoo.extraction.inputs import ImagesArgument, default_out, input_paths, open_inputs
from equimod_zoo.extraction.store import FORMAT_VERSION, FeatureStore, metadata_table
from equimod_zoo.limits import MAX_BATCH_SIZE, MAX_SHARDS, MAX_WORKERS, check_batch, check_limit, check_resolution
from equimod_zoo.loading import ResolvedModel, resolve_model
from equimod_zoo.progress import progress_bar
# compile="auto" compiles on a bf16 CPU from this many images to extract, where inductor's bf16
# kernels repay the compile (bench/extract.py measures it, counted in, against the eager path).
# On fp32-only CPUs (AVX2) the compiled ResNet-50 ran no faster than the eager one, so never there.
AUTO_COMPILE_MIN_IMAGES = 512

Precision = Literal["auto", "fp32", "bf16", "fp16"]


@dataclass
class ExtractionSummary:
    """What a run did; OUT/extraction.json holds the same, for later readers."""

    out: Path
    model: str
    weights_sha256: str
    num_images: int
    num_extracted: int
    num_failed: int
    num_features: int
    num_shards: int
    shards_skipped: int  # already done by an earlier run
    shards_redone: int  # written by an earlier run, but their inputs changed since or their files are damaged
    precision: str
    device: str
    seconds: float
    failures: list[tuple[str, str]] = field(default_factory=list, repr=False)
    compiled: bool = False  # the network went through torch.compile

    @property
    def failures_csv(self) -> Path:
        return self.out / "failures.csv"


def extract_features(
    images: ImagesArgument | None = None,
    *,
    dataset: str | None = None,
    split: str | None = None,
    data_dir: str | Path | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    streaming: bool = False,
    allow_outside_paths: bool = False,
    limit: int | None = None,
    out: str | Path | None = None,
    model: str | Path | torch.nn.Module | ResolvedModel = DEFAULT_MODEL,
    batch_size: int = 64,
    num_workers: int = 2,
    normalize: bool = False,
    shard_size: int = DEFAULT_SHARD_SIZE,
    resolution: int | None = None,
    device: str | torch.device | None = None,
    precision: Precision = "auto",
    jpeg_draft: bool = True,
    max_pixels: int | None = None,
    compile: bool | Literal["auto"] = "auto",
    progress: bool | str = True,
    coordinator: ShardCoordinator | None = None,
) -> ExtractionSummary:
    """Extract pooled features of every image of `images` (or of a `dataset` split) into the feature store `out`.

    Args:
        images: a folder (scanned recursively for image files), image files, list files (.txt,
            one path a line), webdataset tar shards (`shards/{00000..00009}.tar`), or a sequence
            of these; or an `ImageSource` (see `equimod_zoo.data`, e.g. `open_split(...)`) or an
            `ImageStream` (`equimod_zoo.data.streams`), read one shard at a time.
        dataset: instead of `images`, a dataset spec (`equimod_zoo.data`), with its `split`, local
            copy `data_dir`, `image_column` and `label_column`; `streaming` reads it row by row;
            `allow_outside_paths` lets its rows name image files outside the dataset's own folder.
        limit: only the first `limit` images.
        out: the output folder: new, empty, or an earlier extraction, which a rerun with the same
            inputs resumes (anything else is refused); default `features/SOURCE[_SPLIT]_MODEL`.
        model: a zoo name or alias, a local model folder, a `ResolvedModel` (located, verified
            and built once by the caller), or a `torch.nn.Module` (a timm model gives its
            pre-logits features whatever its classifier).
        batch_size: images per forward pass.
        num_workers: DataLoader processes that decode images while the model runs.
        normalize: L2-normalise each feature vector.
        shard_size: images per shard: the unit of resumption.
        resolution: square input size instead of the model's own.
        device: defaults to CUDA when available, else CPU.
        precision: "auto" is bf16 on CPUs with AMX/AVX512-BF16 and on bf16 GPUs, fp16 on
            other GPUs, else fp32.
        jpeg_draft: decode large JPEGs at a reduced scale that still exceeds the resize size.
        max_pixels: refuse larger images (decompression bombs); default PIL.Image.MAX_IMAGE_PIXELS.
        compile: `torch.compile` the network (inductor, weights frozen; batches padded to
            `batch_size` so it compiles once). "auto" compiles on a CPU that runs bf16 (AMX or
            AVX512-BF16) when at least `AUTO_COMPILE_MIN_IMAGES` images remain to extract: the
            compile (tens of seconds, less once inductor's cache holds this model) then pays
            for itself; on fp32-only CPUs and GPUs it gains too little.
        progress: show a progress bar, or a string: what the bar says it extracts (default: the
            input and the model).
        coordinator: which shards this process extracts and who writes the manifest; by default
            this process does everything (`equimod_zoo.extraction.distributed` gives each rank
            of a torchrun job its own).

    Features are float16 on disk. Images that fail to decode are listed in OUT/failures.csv.
    """
    if batch_size < 1 or shard_size < 1 or num_workers < 0:
        raise UserError("batch_size and shard_size must be >= 1 and num_workers >= 0")
    if resolution is not None and resolution < 1:
        raise UserError(f"resolution: {resolution} is not a positive size")
    check_limit("--workers", num_workers, MAX_WORKERS)
    check_limit("--batch-size", batch_size, MAX_BATCH_SIZE, unit="images")
    if resolution is not None:
        check_resolution("--resolution", resolution)
    started = time.perf_counter()
    out = Path(out) if out is not None else default_out(images, dataset=dataset, split=split, model=model)
    sources = input_paths(images, data_dir, dataset)
    FeatureStore(out).check_out(sources=sources)  # before any work
    device = resolve_device(device, argument="device")
    source = open_inputs(images, dataset=dataset, split=split, data_dir=data_dir, image_column=image_column,
                         label_column=label_column, streaming=streaming, allow_outside_paths=allow_outside_paths,
                         limit=limit)
    network, model_name, weights_sha256 = _resolve_model(model)
    images = _resolve_source(source)
    label = progress if isinstance(progress, str) else f"{_input_name(source, dataset, split)} with {model_name}"

    data_config = timm.data.resolve_model_data_config(network)
    if resolution is not None:
        data_config["input_size"] = (data_config["input_size"][0], resolution, resolution)
    side = max(data_config["input_size"][1:])
    check_resolution("--resolution" if resolution is not None else "the model's input_size", side,
                     crop_pct=data_config.get("crop_pct"))
    check_batch("--batch-size", batch_size, side)
    transform = timm.data.create_transform(**data_config, is_training=False)
    draft_size = _resize_size(data_config) if jpeg_draft else None

    amp_dtype = _amp_dtype(precision, device)
    network = inference_network(network).to(device, memory_format=torch.channels_last)
    num_features = _feature_dim(network, data_config, device, amp_dtype)

    streamed = isinstance(images, ImageStream)
    num_images = images.count() if streamed else len(images)
    num_shards = math.ceil(num_images / shard_size)
    check_limit(f"{num_images:,} images in shards of --shard-size {shard_size}: the shards", num_shards, MAX_SHARDS)
    has_labels = images.labelled if streamed else images.label(0) is not None
    # a stream is not read twice: its shards' fingerprints, not a hash of every key, say what it was
    keys = {"streamed": True} if streamed else {"keys_sha256": _keys_sha256(images)}
    store = FeatureStore(out)
    coordinator = coordinator or ShardCoordinator()
    coordinator.begin(store, sources=sources, info={
        "format": FORMAT_VERSION,
        "model": model_name,
        "weights_sha256": weights_sha256,
        "input": {"num_images": num_images, **keys, "source": repr(images)},
        "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in data_config.items()},
        "decode": {"jpeg_draft_size": draft_size, "alpha": "composite on white"},
        "normalize": normalize,
        "shard_size": shard_size,
        "num_shards": num_shards,
        "num_features": num_features,
        "dtype": "float16",
        "has_labels": has_labels,
        "label_names": images.label_names,
    })
    # An indexable source is one unit of work; a stream is one unit a chunk (one shard), read as it goes.
    units = _stream_units(images, shard_size) if streamed else iter([(images, range(num_shards))])
    skipped = redone = todo_shards = 0
    failed_now = 0
    compiled: bool | None = None  # decided at the first shard to extract: a finished run never compiles
    with progress_bar(enabled=bool(progress), unit="img") as bar, torch.inference_mode(), \
            torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        task = bar.add_task(f"extract {label}", total=num_images)
        for view, shards in units:
            fingerprints = _ShardFingerprints(view, shard_size)
            mine = [k for k in shards if coordinator.owns(k)]
            pending = [k for k in mine if not store.is_done(k, fingerprints.of(k))]
            redone += sum(store.metadata_path(k).exists() for k in pending)
            skipped += len(mine) - len(pending)
            todo_shards += len(shards) - len(mine) + len(pending)
            bar.update(task, advance=sum(min(shard_size, len(view) - k * shard_size) for k in shards if k not in pending))
            if not pending:
                continue
            if compiled is None:
                done_images = 0 if streamed else sum(min(shard_size, num_images - k * shard_size)
                                                     for k in range(num_shards) if k not in pending)
                compiled = _compile_pays(compile, device, amp_dtype, num_images - done_images)
                if compiled:
                    network = torch.compile(network, dynamic=False, options={"freezing": True})
            loader = torch.utils.data.DataLoader(
                _DecodingDataset(view, transform, draft_size=draft_size, max_pixels=max_pixels,
                                 resize_to=_resize_size(data_config)),
                batch_sampler=_ShardBatches(pending, shard_size, len(view), batch_size),
                num_workers=num_workers,
                collate_fn=_collate,
                pin_memory=device.type == "cuda",
            )
            shard_buffer = _ShardBuffer()
            for batch in loader:
                if batch.pixels is not None:
                    pixels = batch.pixels.to(device, non_blocking=True)
                    features = _forward(network, _padded(pixels, batch_size) if compiled else pixels)[:len(pixels)]
                    if normalize:
                        features = F.normalize(features, dim=1)
                    shard_buffer.add(batch, features.cpu().numpy())
                else:
                    shard_buffer.add(batch, np.zeros((0, num_features), np.float32))
                failed_now += len(batch.failures)
                bar.update(task, advance=len(batch.indices),
                           description=f"extract {label}" + (f" ({failed_now} failed)" if failed_now else ""))
                shard = batch.indices[0] // shard_size
                if batch.indices[-1] + 1 == min((shard + 1) * shard_size, len(view)):
                    shard_buffer.flush(store, shard, view, has_labels, fingerprints.of(shard), model=model_name)
    if streamed and skipped + todo_shards != num_shards:
        raise UserError(f"{images!r}: gave {skipped + todo_shards} shards of images, not the {num_shards} it counted "
                        f"before; did the input change during the run? Rerun to finish it")

    skipped, redone = coordinator.finish(store, num_shards, skipped, redone)
    num_failed = (store.read_info() or {})["num_failed"]
    return ExtractionSummary(
        out=Path(out), model=model_name, weights_sha256=weights_sha256, num_images=num_images,
        num_extracted=num_images - num_failed, num_failed=num_failed, num_features=num_features,
        num_shards=num_shards, shards_skipped=skipped, shards_redone=redone,
        precision=str(amp_dtype).removeprefix("torch.") if amp_dtype else "fp32", device=str(device),
        seconds=time.perf_counter() - started, failures=store.failures(num_shards), compiled=bool(compiled),
    )


class ShardCoordinator:
    """Who extracts which shard and who writes the manifest (OUT/extraction.json).

    This one is a single process doing everything; `equimod_zoo.extraction.distributed`
    shares the shards among the ranks of a torchrun job.
    """

    def begin(self, store: FeatureStore, *, info: dict[str, Any], sources: Sequence[str | Path] = ()) -> None:
        """Check OUT (refusing a different extraction, someone's files or the input) and record `info`."""
        store.begin(info, sources=sources)

    def owns(self, shard: int) -> bool:
        """Whether this process extracts `shard` (unless it is done already)."""
        return True

    def finish(self, store: FeatureStore, num_shards: int, skipped: int, redone: int) -> tuple[int, int]:
        """Once every shard is written: gather the failures and mark the manifest complete.

        Returns the shards skipped (done before) and redone, counted over every process.
        """
        info = store.complete_info()  # refuses to mark complete an extraction with a shard missing
        num_failed = store.write_failures_csv(num_shards)
        info.update(complete=True, num_failed=num_failed, num_extracted=info["input"]["num_images"] - num_failed)
        store.write_info(info)
        return skipped, redone


def _compile_pays(compile: bool | Literal["auto"], device: torch.device, amp_dtype: torch.dtype | None,
                  num_images: int) -> bool:
    if compile == "auto":
        return device.type == "cpu" and amp_dtype == torch.bfloat16 and num_images >= AUTO_COMPILE_MIN_IMAGES
    if not isinstance(compile, bool):
        raise UserError(f"compile: {compile!r} is not True, False or 'auto'")
    return compile


def _resolve_model(model: str | Path | torch.nn.Module | ResolvedModel) -> tuple[torch.nn.Module, str, str]:
    """The network, the name recorded for it, and the sha256 that identifies its weights."""
    if isinstance(model, torch.nn.Module):
        name = getattr(model, "pretrained_cfg", {}).get("architecture") or type(model).__name__
        return model, name, _state_sha256(model)
    resolved = resolve_model(model)  # a recipe-only zoo entry stops here, with how to get weights
    return resolved.network, resolved.label, resolved.weights_sha256


def _state_sha256(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _input_name(source: object, dataset: str | None, split: str | None) -> str:
    """What the progress bar says is extracted: the dataset and split, or the folder, or the input kind."""
    if dataset is not None:
        return f"{dataset} {split}" if split else dataset
    if isinstance(source, (str, Path)):
        return Path(source).name or str(source)
    return getattr(source, "name", None) or "images"


def _resolve_source(source: str | Path | ImageSource | ImageStream) -> ImageSource | ImageStream:
    if isinstance(source, (str, Path)):
        images = folder_source(source)
        if not len(images):
            raise UserError(f"{source}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in this folder "
                            f"or below it")
        return images
    if isinstance(source, ImageStream):
        if not source.count():
            raise UserError(f"{source!r}: has no images")
        return source
    if isinstance(source, ImageSource):
        if not len(source):
            raise UserError(f"{source!r}: has no images")
        return source
    raise TypeError(f"source: expected a folder, an ImageSource or an ImageStream, got {type(source).__name__}")


def _stream_units(stream: ImageStream, shard_size: int) -> Iterator[tuple[ImageSource, range]]:
    """(chunk addressed by input position, its one shard) for each chunk of the stream."""
    for shard, chunk in enumerate(stream.chunks(shard_size)):
        yield OffsetSource(chunk, shard * shard_size), range(shard, shard + 1)


def _keys_sha256(images: ImageSource) -> str:
    digest = hashlib.sha256()
    for i in range(len(images)):
        digest.update(images.key(i).encode())
        digest.update(b"\n")
    return digest.hexdigest()


class _ShardFingerprints:
    """What each shard's inputs are now: keys, labels and, for files, their `file_state`.

    A shard written from other inputs (an image replaced, edited in place or touched since) no
    longer matches and is extracted again. Dataset rows are identified by the dataset's cache files.
    """

    def __init__(self, images: ImageSource, shard_size: int) -> None:
        self.images, self.shard_size = images, shard_size
        self.paths: list[str] | None = getattr(images, "paths", None)
        cache_files = getattr(getattr(images, "dataset", None), "cache_files", None) or []
        self.source = json.dumps([[f.get("filename"), *file_state(f.get("filename"))] for f in cache_files])
        self._taken: dict[int, str] = {}  # before extraction: a file changed meanwhile is redone next time

    def of(self, shard: int) -> str:
        if shard not in self._taken:
            self._taken[shard] = self._fingerprint(shard)
        return self._taken[shard]

    def _fingerprint(self, shard: int) -> str:
        digest = hashlib.sha256(self.source.encode())
        for i in range(shard * self.shard_size, min((shard + 1) * self.shard_size, len(self.images))):
            row = [self.images.key(i), self.images.label(i), *(file_state(self.paths[i]) if self.paths else ())]
            digest.update(json.dumps(row).encode())
        return digest.hexdigest()


def _resize_size(data_config: dict[str, Any]) -> int:
    """The size timm's eval transform resizes to before cropping (floor(size / crop_pct))."""
    size = max(data_config["input_size"][1:])
    return math.floor(size / (data_config.get("crop_pct") or 1.0))


def _amp_dtype(precision: Precision, device: torch.device) -> torch.dtype | None:
    if precision == "fp32":
        return None
    if precision in ("bf16", "fp16"):
        return torch.bfloat16 if precision == "bf16" else torch.float16
    if precision != "auto":
        raise UserError(f"precision: {precision!r} is not one of auto, fp32, bf16, fp16")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return None


class PooledFeatures(torch.nn.Module):
    """A timm model's pooled pre-logits features, whatever classifier it has."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


def inference_network(model: torch.nn.Module) -> torch.nn.Module:
    """The network extraction runs: for a timm model, its pre-logits features with every
    BatchNorm folded into the convolution before it (torch.fx), which saves a pass over each
    activation; any other module as given. Both in eval mode; the given model is not modified
    when it is folded.
    """
    model = model.eval()
    if not (hasattr(model, "forward_features") and hasattr(model, "forward_head")):
        return model
    pooled = PooledFeatures(model)
    try:
        return fuse(pooled)
    except Exception:  # not traceable by torch.fx: run it unfolded
        return pooled


def _padded(pixels: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The batch filled up with zero images to `batch_size`, so a compiled network sees one shape."""
    missing = batch_size - len(pixels)
    return torch.cat([pixels, pixels.new_zeros(missing, *pixels.shape[1:])]) if missing > 0 else pixels


def _forward(network: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    features = network(pixels.contiguous(memory_format=torch.channels_last))
    if features.ndim != 2:
        raise UserError(f"model returns features of shape {tuple(features.shape)}, not (batch, dim); "
                        f"pass a headless model that pools its features")
    return features.float()


def _feature_dim(network: torch.nn.Module, data_config: dict[str, Any], device: torch.device,
                 amp_dtype: torch.dtype | None) -> int:
    with torch.inference_mode(), torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                                                enabled=amp_dtype is not None):
        return int(_forward(network, torch.zeros(1, *data_config["input_size"], device=device)).shape[1])


class _DecodingDataset(torch.utils.data.Dataset):
    """Decodes and transforms one image; a bad image becomes an error message, not an exception."""

    def __init__(self, images: ImageSource, transform: Any, *, draft_size: int | None, max_pixels: int | None,
                 resize_to: int | None = None):
        self.images, self.transform = images, transform
        self.draft_size, self.max_pixels = draft_size, max_pixels
        self.resize_to = resize_to  # the transform's resize: its size bounds the work too

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, int, int, str | None]:
        try:
            decoded = load_rgb(lambda: self.images.open(i), draft_size=self.draft_size, max_pixels=self.max_pixels,
                               resize_to=self.resize_to)
            return i, self.transform(decoded.image), decoded.width, decoded.height, None
        except Exception as error:  # any bad file: record it and go on
            message = " ".join(f"{type(error).__name__}: {error}".split())
            return i, None, 0, 0, message


class _ShardBatches(torch.utils.data.Sampler):
    """Batches of consecutive inputs that never straddle a shard, for the pending shards only.

    Aligning batches to shards makes a resumed shard see exactly the batches an uninterrupted
    run would, so its features are bit-identical.
    """

    def __init__(self, shards: Sequence[int], shard_size: int, num_images: int, batch_size: int):
        self.shards, self.shard_size, self.num_images, self.batch_size = shards, shard_size, num_images, batch_size

    def __iter__(self) -> Iterator[list[int]]:
        for shard in self.shards:
            end = min((shard + 1) * self.shard_size, self.num_images)
            for start in range(shard * self.shard_size, end, self.batch_size):
                yield list(range(start, min(start + self.batch_size, end)))

    def __len__(self) -> int:
        return sum(math.ceil((min((k + 1) * self.shard_size, self.num_images) - k * self.shard_size) / self.batch_size)
                   for k in self.shards)


@dataclass
class _Batch:
    indices: list[int]
    pixels: torch.Tensor | None  # the images that decoded, stacked
    decoded: list[tuple[int, int, int]]  # (index, width, height) of those images
    failures: list[tuple[int, str]]


def _collate(items: list[tuple[int, torch.Tensor | None, int, int, str | None]]) -> _Batch:
    good = [item for item in items if item[4] is None]
    return _Batch(
        indices=[item[0] for item in items],
        pixels=torch.stack([item[1] for item in good]) if good else None,
        decoded=[(i, w, h) for i, _, w, h, _ in good],
        failures=[(item[0], item[4]) for item in items if item[4] is not None],
    )


class _ShardBuffer:
    """Collects one shard's batches until the shard is complete, then writes it."""

    def __init__(self) -> None:
        self.features: list[np.ndarray] = []
        self.decoded: list[tuple[int, int, int]] = []
        self.failures: list[tuple[int, str]] = []

    def add(self, batch: _Batch, features: np.ndarray) -> None:
        self.features.append(features)
        self.decoded.extend(batch.decoded)
        self.failures.extend(batch.failures)

    def flush(self, store: FeatureStore, shard: int, images: ImageSource, has_labels: bool,
              inputs_sha256: str, *, model: str) -> None:
        indices = [i for i, _, _ in self.decoded]
        # stored as float16: a feature beyond its range (65504) is as useless as a NaN
        with np.errstate(over="ignore"):  # an overflow is reported below, as the model's error
            features = np.concatenate(self.features).astype(np.float16)
        broken = np.flatnonzero(~np.isfinite(features).all(axis=1))
        if len(broken):
            more = f" and {len(broken) - 1} more images" if len(broken) > 1 else ""
            raise NonFiniteFeaturesError(
                f"{model}: gives non-finite features (NaN, inf, or beyond float16's range) for "
                f"{images.key(indices[broken[0]])}{more} of shard {shard}; its weights or its data config (mean, std) "
                f"are broken. Nothing of this shard was written")
        table = metadata_table(
            indices,
            [images.key(i) for i in indices],
            [w for _, w, _ in self.decoded],
            [h for _, _, h in self.decoded],
            [images.label(i) for i in indices] if has_labels else None,
        )
        store.write_shard(shard, features, table,
                          [(images.key(i), error) for i, error in self.failures], inputs_sha256=inputs_sha256)
        self.__init__()


