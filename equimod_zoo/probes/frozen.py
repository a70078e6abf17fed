"""The frozen-feature probe: the linear probe and the weighted kNN on labelled features.

One implementation serves `equimod-zoo linear` (extraction folders given by the user), `transfer`
and `compare` (a dataset's cached splits):

- linear: L2 chosen on the validation split (or, without one, on a stratified 20 % of train),
  then refit on train + val (`equimod_zoo.probes.linear`);
- kNN: k=200, T=0.1, with train + val as the neighbour bank (`equimod_zoo.probes.knn`).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from equimod_zoo.atomic import atomic_write_text
from equimod_zoo.errors import UserError
from equimod_zoo.extraction.store import load_features as load_store_features
from equimod_zoo.extraction.store import read_info, read_metadata
from equimod_zoo.probes.knn import KnnResult, knn_probe
from equimod_zoo.probes.linear import DEFAULT_GRID, LinearProbeResult, SelectMetric, linear_probe
from equimod_zoo.records import Record, add_records, check_records_dir, new_record

KNN_K = 200
KNN_TEMPERATURE = 0.1

FrozenProtocol = Literal["linear", "knn"]
FROZEN_PROTOCOLS: tuple[FrozenProtocol, ...] = ("linear", "knn")


@dataclass
class LabelledFeatures:
    """One split's features (N, D), integer labels (N,) and provenance."""

    features: np.ndarray
    labels: np.ndarray
    source: str  # the extraction folder, or a name for features given in memory
    model: str = ""
    weights_sha256: str = ""
    label_names: list[str] | None = None


def read_labelled_features(folder: str | Path) -> LabelledFeatures:
    """Features and `label` column of a finished extraction; a clear error if it has no labels."""
    folder = Path(folder)
    info = read_info(folder)
    _, features = load_store_features(folder)
    metadata = read_metadata(folder)
    if "label" not in metadata.column_names:
        raise UserError(f"{folder}: the features have no labels; extract them from a labelled dataset "
                        f"(--dataset with a label column, or an imagefolder tree)")
    labels = np.asarray(metadata.column("label").to_pylist(), dtype=np.int64)
    if len(labels) != len(features):
        raise UserError(f"{folder}: {len(features)} feature rows but {len(labels)} labels")
    return LabelledFeatures(features, labels, str(folder), str(info.get("model")), str(info.get("weights_sha256")),
                            info.get("label_names"))


@dataclass
class FrozenProbeReport:
    """The probes run on one set of train / (val) / test features."""

    model: str
    weights_sha256: str
    train: str
    test: str
    val: str | None
    linear: LinearProbeResult | None
    knn: KnnResult | None
    sizes: dict[str, int]  # rows of each split given (train, val, test)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "weights_sha256": self.weights_sha256, "train": self.train, "val": self.val,
                "test": self.test, "linear": self.linear.to_dict() if self.linear else None,
                "knn": self.knn.to_dict() if self.knn else None}

    def records(self, *, dataset: str, split: str = "test", command: str | None = None) -> list[Record]:
        """The report as records measured now: `top1` (linear) and `knn_top1` (knn) on `split`."""
        measured = [("linear", "top1", self.linear), ("knn", "knn_top1", self.knn)]
        return [new_record(self.weights_sha256, dataset=dataset, split=split, protocol=protocol, metric=metric,
                           value=result.top1, command=command)
                for protocol, metric, result in measured if result is not None]

    def scores(self, protocol: FrozenProtocol) -> dict[str, float]:
        """top1, top5 and mean_per_class_accuracy of one protocol, in percent."""
        result = self._result(protocol)
        return {"top1": result.top1, "top5": result.top5, "mean_per_class_accuracy": result.mean_per_class_accuracy}

    def split_sizes(self, protocol: FrozenProtocol) -> dict[str, int]:
        """Rows of each split; the linear probe's held-out validation (without a val split) comes out of train."""
        if protocol == "linear":
            lin = self._result("linear")
            return {"train": lin.train_size, "val": lin.val_size, "test": lin.test_size}
        return dict(self.sizes)

    def hyperparameters(self, protocol: FrozenProtocol) -> dict[str, Any]:
        """How the protocol chose and fitted: what `transfer` records beside the score."""
        if protocol == "linear":
            lin = self._result("linear")
            return {"weight_decay": lin.weight_decay,
                    "selected_on": "validation split" if self.val is not None else "stratified 20% of train",
                    "select_metric": lin.select_metric,
                    "val_scores": {f"{k:.3g}": v for k, v in lin.val_scores.items()}, "refit_on": "train+val"}
        knn = self._result("knn")
        return {"k": knn.k, "temperature": knn.temperature,
                "bank": "train+val" if self.val is not None else "train"}

    def _result(self, protocol: FrozenProtocol) -> LinearProbeResult | KnnResult:
        result = self.linear if protocol == "linear" else self.knn
        if result is None:
            raise UserError(f"the {protocol} probe was not run")
        return result


def frozen_probe(
    train: LabelledFeatures,
    test: LabelledFeatures,
    *,
    val: LabelledFeatures | None = None,
    protocols: Sequence[FrozenProtocol] = FROZEN_PROTOCOLS,
    select_metric: SelectMetric = "top1",
    grid: Sequence[float] = DEFAULT_GRID,
    k: int = KNN_K,
    temperature: float = KNN_TEMPERATURE,
    num_classes: int | None = None,
    seed: int = 0,
    device: str | None = None,
    progress: bool | str = False,
    dtype: torch.dtype = torch.float64,
) -> FrozenProbeReport:
    """Run the linear probe and/or the kNN on one model's labelled features; see the module docstring.

    The linear probe computes in `dtype`, float64 by default: float32 sums in an order that depends
    on the number of threads, which moved the choice between near-tied L2 strengths, and the
    default model's Flowers-102 score by half a point, between 1 and 2 threads. In float64 a score
    is the same whatever the thread count.

    `progress` shows a bar over the linear probe's fits, naming the model and the training features
    (a string: what the bar says instead).
    """
    unknown = [p for p in protocols if p not in FROZEN_PROTOCOLS]
    if unknown or not protocols:
        raise UserError(f"protocols: expected some of {', '.join(FROZEN_PROTOCOLS)}, got {list(protocols)}")
    parts = {"train": train, "test": test, **({"val": val} if val is not None else {})}
    check_compatible(parts)
    linear = knn = None
    if "linear" in protocols:
        linear = linear_probe(train.features, train.labels, test.features, test.labels,
                              val_x=None if val is None else val.features, val_y=None if val is None else val.labels,
                              grid=grid, select_metric=select_metric, num_classes=num_classes, seed=seed,
                              device=device, dtype=dtype,
                              progress=progress if isinstance(progress, str) or not progress else
                              f"linear probe of {train.model or 'the features'} on {Path(train.source).name}")
    if "knn" in protocols:
        bank_x = train.features if val is None else np.concatenate([train.features, val.features])
        bank_y = train.labels if val is None else np.concatenate([train.labels, val.labels])
        knn = knn_probe(bank_x, bank_y, test.features, test.labels, k=k, temperature=temperature,
                        num_classes=num_classes, device=device)
    return FrozenProbeReport(train.model, train.weights_sha256, train.source, test.source,
                             None if val is None else val.source, linear, knn,
                             {role: len(part.labels) for role, part in parts.items()})


def probe_feature_folders(
    train: str | Path,
    test: str | Path,
    *,
    val: str | Path | None = None,
    select_metric: SelectMetric = "top1",
    k: int = KNN_K,
    temperature: float = KNN_TEMPERATURE,
    seed: int = 0,
    device: str | None = None,
    progress: bool = True,
    record: str | Path | None = None,
    dataset_name: str | None = None,
    json_path: str | Path | None = None,
) -> FrozenProbeReport:
    """`frozen_probe` (linear and kNN) on extraction output folders: what `equimod-zoo linear` runs.

    Args:
        train, test, val: `equimod-zoo extract` output folders of one model (val: default, a
            stratified 20 % of train).
        record: a records folder the linear top-1 and kNN top-1 are added to, with the running
            command, under `dataset_name` (needed with it); checked before any work.
        json_path: also write the report there, as JSON.
    """
    if record is not None and not dataset_name:
        raise UserError("--record needs --dataset-name (e.g. cifar10), the dataset the results belong to")
    if record is not None:
        check_records_dir(Path(record))  # before the work, not after
    report = frozen_probe(read_labelled_features(train), read_labelled_features(test),
                          val=None if val is None else read_labelled_features(val), select_metric=select_metric,
                          k=k, temperature=temperature, seed=seed, device=device, progress=progress)
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(report.to_dict(), indent=2) + "\n")
    if record is not None:
        add_records(record, report.records(dataset=dataset_name))
    return report


def check_compatible(parts: dict[str, LabelledFeatures]) -> None:
    """All splits come from the same weights, have rows, the same width and the same class names;
    the training split has at least two classes."""
    train = parts["train"]
    classes = np.unique(train.labels)
    if len(classes) == 1:
        raise UserError(f"{train.source}: every training label is {int(classes[0])}; a classifier needs at least "
                        f"two classes to learn from")
    for part in parts.values():
        if len(part.labels) == 0:
            raise UserError(f"{part.source}: no images were extracted")
        if part.weights_sha256 != train.weights_sha256:
            raise UserError(f"{part.source}: extracted with other weights ({part.weights_sha256[:12]}...) than "
                            f"{train.source} ({train.weights_sha256[:12]}...)")
        if part.features.ndim != 2 or part.features.shape[1] != train.features.shape[1]:
            raise UserError(f"{part.source}: features of shape {part.features.shape}, {train.source} has "
                            f"{train.features.shape[1]}-d features")
        if part.label_names is not None and train.label_names is not None and part.label_names != train.label_names:
            raise UserError(f"{part.source}: its class names differ from those of {train.source}")
