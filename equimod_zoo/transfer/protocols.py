"""Frozen-feature protocols on extraction output folders: the linear probe and the weighted kNN.

`probe_feature_folders` is what `equimod-zoo linear` runs: it reads labelled features written by
`equimod_zoo.extract_features`, fits both probes, and returns one report that can be printed,
written as JSON, or recorded into the model folder the features came from.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from equimod_zoo.extraction.store import read_info, read_metadata
from equimod_zoo.extraction.store import load_features as load_store_features
from equimod_zoo.probes.knn import KnnResult, knn_probe
from equimod_zoo.probes.linear import DEFAULT_GRID, LinearProbeResult, linear_probe
from equimod_zoo.registry import Metric

KNN_K = 200
KNN_TEMPERATURE = 0.1


@dataclass
class LabelledFeatures:
    """One extraction output folder's features (float32), labels and provenance."""

    folder: Path
    features: np.ndarray
    labels: np.ndarray
    label_names: list[str] | None
    model: str
    weights_sha256: str


def read_labelled_features(folder: str | Path) -> LabelledFeatures:
    """Features and `label` column of a finished extraction; a clear error if it has no labels."""
    folder = Path(folder)
    info = read_info(folder)
    _, features = load_store_features(folder)
    metadata = read_metadata(folder)
    if "label" not in metadata.column_names:
        raise ValueError(f"{folder}: the features have no labels; extract them from a labelled dataset "
                         f"(--dataset with a label column, or an imagefolder tree)")
    labels = np.asarray(metadata.column("label").to_pylist(), dtype=np.int64)
    if len(labels) != len(features):
        raise ValueError(f"{folder}: {len(features)} feature rows but {len(labels)} labels")
    return LabelledFeatures(folder, features, labels, info.get("label_names"), str(info.get("model")),
                            str(info.get("weights_sha256")))


@dataclass
class FrozenProbeReport:
    """The linear probe and the kNN on the same features."""

    model: str
    weights_sha256: str
    train: str
    test: str
    val: str | None
    linear: LinearProbeResult
    knn: KnnResult

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "weights_sha256": self.weights_sha256, "train": self.train, "val": self.val,
                "test": self.test, "linear": self.linear.to_dict(), "knn": self.knn.to_dict()}

    def metrics(self, *, dataset: str, command: str) -> list[Metric]:
        """The report as registry metrics: `top1` (linear) and `knn_top1` (knn)."""
        return [
            Metric("top1", dataset, "linear", self.linear.top1, command, self.weights_sha256),
            Metric("knn_top1", dataset, "knn", self.knn.top1, command, self.weights_sha256),
        ]


def probe_feature_folders(
    train: str | Path,
    test: str | Path,
    *,
    val: str | Path | None = None,
    select_metric: str = "top1",
    grid: tuple[float, ...] = DEFAULT_GRID,
    k: int = KNN_K,
    temperature: float = KNN_TEMPERATURE,
    seed: int = 0,
    device: str | None = None,
) -> FrozenProbeReport:
    """Linear probe (lambda chosen on `val`, or on a stratified 20 % of train) and kNN on extracted features."""
    parts = {"train": read_labelled_features(train), "test": read_labelled_features(test)}
    if val is not None:
        parts["val"] = read_labelled_features(val)
    check_compatible(parts)
    tr, te, va = parts["train"], parts["test"], parts.get("val")
    linear = linear_probe(tr.features, tr.labels, te.features, te.labels,
                          val_x=None if va is None else va.features, val_y=None if va is None else va.labels,
                          grid=grid, select_metric=select_metric, seed=seed, device=device)
    bank_x = tr.features if va is None else np.concatenate([tr.features, va.features])
    bank_y = tr.labels if va is None else np.concatenate([tr.labels, va.labels])
    knn = knn_probe(bank_x, bank_y, te.features, te.labels, k=k, temperature=temperature, device=device)
    return FrozenProbeReport(tr.model, tr.weights_sha256, str(tr.folder), str(te.folder),
                             None if va is None else str(va.folder), linear, knn)


def check_compatible(parts: dict[str, LabelledFeatures]) -> None:
    """All folders come from the same weights, have the same width and the same class names."""
    train = parts["train"]
    for role, part in parts.items():
        if part.weights_sha256 != train.weights_sha256:
            raise ValueError(f"{part.folder}: extracted with other weights ({part.weights_sha256[:12]}...) than "
                             f"{train.folder} ({train.weights_sha256[:12]}...)")
        if part.features.shape[1] != train.features.shape[1]:
            raise ValueError(f"{part.folder}: {part.features.shape[1]}-d features, {train.folder} has "
                             f"{train.features.shape[1]}-d")
        if part.label_names is not None and train.label_names is not None and part.label_names != train.label_names:
            raise ValueError(f"{part.folder}: its class names differ from those of {train.folder}")
        if len(part.labels) == 0:
            raise ValueError(f"{part.folder}: no images were extracted")
