"""`probe_augmentations`: what a backbone's frozen features keep of each augmentation parameter.

    report = probe_augmentations("cifar10", model="simclr_equimod_r18_cifar10", data_dir="data/cifar10-jpeg")
    report["inputs"]["view"]["hue"]     # {"metric": "r2", "value": ..., "ci_low": ..., "ci_high": ...}

The report (JSON-ready, keys in `REPORT_KEYS`):
    model, weights_sha256, dataset, split, num_images, num_samples, resolution, source_size, views,
    augmentations_per_image, seed,
    inputs: {"view": {param: score}, "pair": {param: score}}  (every parameter of the model's pipeline,
            `AugmentConfig.params`, in order: 15 for SimCLR's CIFAR-10 pipeline, 18 for BYOL's)
    equivariance: `equivariance_metrics` of the folder's EquiMod heads, or null without them.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from equimod_zoo.atomic import atomic_write_text
from equimod_zoo.equimod.augment import PARAM_NAMES
from equimod_zoo.constants import DEFAULT_MODEL
from equimod_zoo.loading import ResolvedModel, load_located, resolve_model
from equimod_zoo.progress import progress_bar
from equimod_zoo.equimod.heads_file import load_equimod_heads
from equimod_zoo.devices import resolve_device
from equimod_zoo.errors import NonFiniteFeaturesError, UserError
from equimod_zoo.limits import (MAX_AUGMENTATIONS_PER_IMAGE, MAX_BATCH_SIZE, MAX_BOOTSTRAP, MAX_DECODED_BYTES,
                                check_batch, check_limit, check_resolution)
from equimod_zoo.sensitivity.equivariance import equivariance_metrics
from equimod_zoo.sensitivity.probes import probe_parameters, split_images
from equimod_zoo.sensitivity.sampling import augmented_features, load_images, probe_augmentation

INPUT_KINDS = ("view", "pair")
REPORT_KEYS = ("model", "weights_sha256", "dataset", "split", "num_images", "num_samples", "resolution",
               "source_size", "views", "augmentations_per_image", "seed", "inputs", "equivariance")
SCORE_KEYS = ("metric", "value", "ci_low", "ci_high")


def probe_augmentations(
    dataset: str = "cifar10",
    *,
    model: str | Path | ResolvedModel = DEFAULT_MODEL,
    data_dir: str | Path | None = None,
    split: str | None = "test",
    num_images: int = 2000,
    resolution: int | None = None,
    augmentations_per_image: int = 2,
    views: Sequence[int] | None = None,
    seed: int = 0,
    batch_size: int = 256,
    num_bootstrap: int = 1000,
    device: str | torch.device | None = None,
    progress: bool = True,
    json_path: str | Path | None = None,
) -> dict[str, Any]:
    """Probe every augmentation parameter from `model`'s frozen features on `num_images` images of
    `dataset`: what `equimod-zoo probe-augs` runs.

    Args:
        dataset: a dataset spec (see `equimod_zoo.data`): a known name, a Hub id, a local
            folder or parquet file; also the dataset's name in the report.
        model: a zoo name or alias, a local model folder (its EquiMod heads, if any, give the
            equivariance metrics), or a `ResolvedModel`.
        data_dir: a local copy of the named dataset (e.g. data/cifar10-jpeg).
        split: the split the images come from; held-out images (test) by default.
        resolution: the crop size (default: the model's training crop size or input size).
        augmentations_per_image: views per image, cycling through the recipe's `views`
            (default: all; 0 = view 1, 1 = view 2).
        num_bootstrap: resamples of the test images for the 95 % intervals.
        progress: show a progress bar for each stage (decoding, features, probes), naming the
            model and the data.
        json_path: also write the report there, as JSON.
    """
    import timm

    from equimod_zoo.data.spec import open_split, resolve_spec

    check_limit("--augs-per-image", augmentations_per_image, MAX_AUGMENTATIONS_PER_IMAGE)
    check_limit("--bootstrap", num_bootstrap, MAX_BOOTSTRAP)
    check_limit("--batch-size", batch_size, MAX_BATCH_SIZE, unit="images")
    if resolution is not None:
        check_resolution("--resolution", resolution)
    device = resolve_device(device, argument="device")
    resolved = resolve_model(model)
    located = resolved.located
    model_name = str(model) if isinstance(model, (str, Path)) else resolved.label
    backbone = load_located(located)
    data_config = timm.data.resolve_model_data_config(backbone)
    augmentation = probe_augmentation(located.config, resolution=resolution, mean=data_config["mean"],
                                      std=data_config["std"])
    check_batch("--batch-size", batch_size, augmentation.resolution)
    check_limit(f"--num-images {num_images} decoded at {augmentation.source_size} px", num_images * 3
                * augmentation.source_size ** 2, MAX_DECODED_BYTES, unit="bytes")
    source = open_split(resolve_spec(dataset, data_dir=data_dir), split=split)
    images, _ = load_images(source, num_images=num_images, size=augmentation.source_size, seed=seed,
                            progress=progress and f"decode {num_images} images of {dataset} {split or ''}".rstrip())
    features = augmented_features(backbone, images, augmentation, augmentations_per_image=augmentations_per_image,
                                  views=views, seed=seed, batch_size=batch_size, device=device,
                                  progress=progress and f"features of {resolved.label}: x0 and "
                                                        f"{augmentations_per_image} views per image")
    if not (bool(torch.isfinite(features.original).all()) and bool(torch.isfinite(features.view).all())):
        raise NonFiniteFeaturesError(f"{model_name}: gives non-finite features (NaN or inf) on {dataset}; its "
                                     f"weights or its data config (mean, std) are broken, and no probe can read them")
    splits = split_images(num_images, seed=seed)
    names = augmentation.augment.config.params
    inputs = {}
    with progress_bar(enabled=progress) as bar:
        task = bar.add_task(f"probe {len(names)} parameters from {resolved.label}'s features, view and pair",
                            total=len(INPUT_KINDS) * len(names))
        for kind in INPUT_KINDS:
            scores = probe_parameters(features.inputs(kind), features.params, features.image, splits, names=names,
                                      num_bootstrap=num_bootstrap, seed=seed,
                                      advance=lambda count: bar.advance(task, count))
            inputs[kind] = {param: score.to_dict() for param, score in scores.items()}
    heads = load_equimod_heads(located.weights.parent)
    equivariance = None
    if heads is not None:
        if heads.param_names != augmentation.augment.config.params:
            raise UserError(f"{located.weights.parent}: the EquiMod heads read {len(heads.param_names)} augmentation "
                            f"parameters, the recorded pipeline has {len(augmentation.augment.config.params)}")
        equivariance = equivariance_metrics(heads, features.original, features.view, features.params, features.image,
                                            batch_size=min(batch_size, len(features.view)))
    report = {
        "model": model_name,
        "weights_sha256": located.sha256,
        "dataset": dataset,
        "split": split,
        "num_images": num_images,
        "num_samples": int(features.view.shape[0]),
        "resolution": augmentation.resolution,
        "source_size": augmentation.source_size,
        "views": sorted(set(features.view_kind.tolist())),
        "augmentations_per_image": augmentations_per_image,
        "seed": seed,
        "inputs": inputs,
        "equivariance": equivariance,
    }
    if json_path is not None:
        write_reports(report, json_path)
    return report


def report_parameters(reports: Sequence[dict[str, Any]]) -> list[str]:
    """The parameters any of `reports` scores, in `PARAM_NAMES` order (pipelines differ: SimCLR has no blur)."""
    present = {name for report in reports for scores in report["inputs"].values() for name in scores}
    return [name for name in PARAM_NAMES if name in present]


def write_reports(reports: dict[str, Any] | Sequence[dict[str, Any]], path: str | Path) -> Path:
    """One report as a JSON object, several (a multi-model comparison) as a JSON list; written atomically."""
    atomic_write_text(path, json.dumps(reports, indent=2) + "\n")
    return Path(path)
