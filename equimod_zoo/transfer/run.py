"""`transfer`: one model on one dataset with one protocol, features and results cached.

    result = transfer("flowers102", model="simclr_equimod_r18_cifar10", data_dir="data/flowers102")
    result.metric, result.score          # "mean_per_class_accuracy", 60.12

Protocols: `linear` (Kornblith et al. 2019: L-BFGS logistic regression on frozen features, L2
chosen on the validation split or a stratified 20 % of train, refit on train + val), `knn`
(weighted kNN, k=200, T=0.1, on train + val), `finetune` (the whole network, a short schedule).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from equimod_zoo.atomic import atomic_write_text
from equimod_zoo.cache import default_cache_dir
from equimod_zoo.constants import DEFAULT_MODEL
from equimod_zoo.errors import UserError
from equimod_zoo.extraction.extract import Precision, extract_features
from equimod_zoo.limits import MAX_WORKERS, check_batch, check_limit, check_resolution
from equimod_zoo.loading import ResolvedModel, load_located, resolve_model
from equimod_zoo.probes.frozen import frozen_probe, read_labelled_features
from equimod_zoo.records import Record, add_records, check_records_dir, new_record
from equimod_zoo.transfer.cache import CacheKey, data_state, features_cached, read_result, write_result
from equimod_zoo.transfer.datasets import (TransferDataset, TransferSplits, data_source, load_splits, locate_data,
                                           resolve_dataset)
from equimod_zoo.transfer.finetune import FinetuneConfig, finetune
from equimod_zoo.weights import LocatedWeights

Protocol = Literal["linear", "knn", "finetune"]
PROTOCOLS = ("linear", "knn", "finetune")
# A model reads a transfer dataset at its own input size, but never below this: a 32 px CIFAR
# backbone sees a Flowers-102 image at 64 px, where the default model scores 60.12 against 53.46
# at 32 px (mean per-class, linear, fp32 features); the zoo's records were measured there.
MIN_RESOLUTION = 64
# Features are extracted in fp32 unless asked otherwise: a score is then the same on every machine
# (bf16 features, which a CPU with AVX512-BF16 or AMX would pick for speed, move it by tenths).
DEFAULT_PRECISION = "fp32"


def default_resolution(model_input_size: int) -> int:
    """The input size transfer uses when none is given: the model's own, at least `MIN_RESOLUTION`."""
    return max(int(model_input_size), MIN_RESOLUTION)


@dataclass
class TransferResult:
    """One transfer measurement, as printed and as written to JSON."""

    dataset: str
    model: str
    weights_sha256: str
    resolution: int
    protocol: str
    metric: str  # the dataset's official metric: mean_per_class_accuracy or top1
    score: float  # that metric, in percent
    scores: dict[str, float]  # top1, top5 and mean_per_class_accuracy, in percent
    split_sizes: dict[str, int]  # images actually used per split (train, val, test)
    hyperparameters: dict[str, Any]
    source: str  # where the images came from
    seconds: float = 0.0
    cached_splits: list[str] = field(default_factory=list)  # splits whose features came from the cache
    precision: str = DEFAULT_PRECISION  # of the features the frozen probes read

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransferResult:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    def as_record(self, *, split: str = "test", command: str | None = None) -> Record:
        """The score as a record measured now, on `split` (the test split)."""
        return new_record(self.weights_sha256, dataset=self.dataset, split=split, protocol=self.protocol,
                          metric=self.metric, value=self.score, command=command)


def transfer(
    dataset: str | TransferDataset,
    *,
    model: str | Path | ResolvedModel = DEFAULT_MODEL,
    data_dir: str | Path | None = None,
    protocol: Protocol = "linear",
    resolution: int | None = None,
    cache_dir: str | Path | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    finetune_config: FinetuneConfig = FinetuneConfig(),
    reuse_result: bool = False,
    batch_size: int = 64,
    num_workers: int = 2,
    device: str | None = None,
    progress: bool = True,
    limit: int | None = None,
    record: str | Path | None = None,
    json_path: str | Path | None = None,
    precision: Precision = DEFAULT_PRECISION,
) -> TransferResult:
    """Measure `model` on `dataset` with `protocol`: what `equimod-zoo transfer` runs; see the module docstring.

    Args:
        dataset: a built-in name (`flowers102`, `cub200`, ... see `DATASETS`), `hf:OWNER/NAME`,
            `imagefolder:DIR`, or a `TransferDataset`.
        model: a zoo name or alias, a local model folder, or a `ResolvedModel` (located, verified
            and built once by the caller, e.g. `compare` for all its datasets).
        data_dir: a local copy of the dataset (parquet, CUB_200_2011 or imagefolder layout);
            default: the Hugging Face Hub.
        resolution: square input size; default: the model's own, at least `MIN_RESOLUTION` (64 px).
        cache_dir: default `$EQUIMOD_ZOO_CACHE` or `~/.cache/equimod_zoo`.
        image_column, label_column: override the dataset's columns.
        limit: a quick look: at most this many images of each split (see `load_splits`).
        reuse_result: return the cached result of an identical earlier run instead of measuring again.
        record: a records folder (`equimod_zoo.records`) the score is added to, with the running
            command; checked before any work.
        json_path: also write the result there, as JSON.
        progress: show a progress bar for each split extracted, naming the dataset, split and model.
        precision: of the extracted features (`extract_features`' values); fp32 by default, so that a
            score is the same on every machine.

    Features are cached per split, so only the first run of a model on a dataset extracts them.
    """
    if record is not None:
        check_records_dir(Path(record))  # before the work, not after
    result = _measure(dataset, model=model, data_dir=data_dir, protocol=protocol, resolution=resolution,
                      cache_dir=cache_dir, image_column=image_column, label_column=label_column,
                      finetune_config=finetune_config, reuse_result=reuse_result, batch_size=batch_size,
                      num_workers=num_workers, device=device, progress=progress, limit=limit,
                      precision=precision)
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(result.to_dict(), indent=2) + "\n")
    if record is not None:
        add_records(record, [result.as_record()])
    return result


def _measure(dataset: str | TransferDataset, *, model: str | Path | ResolvedModel, data_dir: str | Path | None,
             protocol: Protocol, resolution: int | None, cache_dir: str | Path | None, image_column: str | None,
             label_column: str | None, finetune_config: FinetuneConfig, reuse_result: bool, batch_size: int,
             num_workers: int, device: str | None, progress: bool, limit: int | None,
             precision: Precision) -> TransferResult:
    if protocol not in PROTOCOLS:
        raise UserError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if resolution is not None and resolution < 1:
        raise UserError(f"resolution: {resolution} is not a positive size")
    if resolution is not None:
        check_resolution("--resolution", resolution)
    check_limit("--workers", num_workers, MAX_WORKERS)
    started = time.perf_counter()
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    spec = dataset if isinstance(dataset, TransferDataset) else resolve_dataset(
        dataset, image_column=image_column, label_column=label_column)
    resolved = resolve_model(model)  # the one sha256 pass of this command; the network is built on first use
    located = resolved.located
    resolution = resolution or default_resolution(located.config.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
    check_batch("--batch-size", batch_size, resolution)
    located_data = locate_data(spec, data_dir)
    state = f"#{data_state(located_data.location)}" if located_data.layout != "hub" else ""
    key = CacheKey(resolved.label, located.sha256, spec.name, data_source(spec, data_dir, limit=limit) + state,
                   resolution, precision)
    if reuse_result:
        earlier = read_result(key.result_path(cache_dir, protocol))
        if earlier is not None and (protocol != "finetune" or _same_config(earlier, finetune_config)):
            return TransferResult.from_dict(earlier)
    splits = load_splits(spec, data_dir=data_dir, cache_dir=cache_dir, limit=limit)

    cached: list[str] = []
    if protocol == "finetune":
        scores, sizes, hyper = _finetune(located, splits, key, cache_dir, resolution, finetune_config, device,
                                         progress and f"fine-tune {key.model} on {spec.name} at {resolution} px")
    else:
        parts = {}
        for role, images in splits.splits().items():
            folder = key.features_dir(cache_dir, splits.dataset.split_name(role))
            if features_cached(folder, num_images=len(images), weights_sha256=located.sha256):
                cached.append(role)
            else:
                split = splits.dataset.split_name(role)
                extract_features(images, out=folder, model=resolved, resolution=resolution, batch_size=batch_size,
                                 num_workers=num_workers, device=device, precision=precision,
                                 progress=progress and f"{spec.name} {split}, {resolved.label} at {resolution} px")
            parts[role] = read_labelled_features(folder)
        report = frozen_probe(parts["train"], parts["test"], val=parts.get("val"), protocols=(protocol,),
                              select_metric=spec.metric, num_classes=splits.num_classes, device=device,
                              progress=progress and f"linear probe of {resolved.label} on {spec.name}")
        scores, sizes, hyper = report.scores(protocol), report.split_sizes(protocol), report.hyperparameters(protocol)

    result = TransferResult(
        dataset=spec.name, model=key.model, weights_sha256=located.sha256, resolution=resolution, protocol=protocol,
        metric=spec.metric, score=scores[spec.metric], scores=scores, split_sizes=sizes, hyperparameters=hyper,
        source=splits.source, seconds=time.perf_counter() - started, cached_splits=cached,
        precision=precision if protocol != "finetune" else "fp32",
    )
    write_result(key.result_path(cache_dir, protocol), result.to_dict())
    return result


def _same_config(result: dict[str, Any], config: FinetuneConfig) -> bool:
    hyper = result.get("hyperparameters", {})
    return all(hyper.get(k) == v for k, v in config.to_dict().items())


def _finetune(located: LocatedWeights, splits: TransferSplits, key: CacheKey, cache_dir: Path, resolution: int,
              config: FinetuneConfig, device: str | None,
              progress: bool | str) -> tuple[dict[str, float], dict[str, int], dict[str, Any]]:
    network = load_located(located, num_classes=splits.num_classes)
    train = [splits.train] + ([splits.val] if splits.val is not None else [])
    checkpoint = key.result_path(cache_dir, "finetune").with_suffix(".checkpoint.pt")
    scores = finetune(network, train, splits.test, resolution=resolution, config=config, checkpoint=checkpoint,
                      device=device, progress=progress)
    sizes = splits.sizes()
    return scores.to_dict(), sizes, {**config.to_dict(), "trained_on": "train+val" if splits.val else "train"}
