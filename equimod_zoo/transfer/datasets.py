"""Transfer datasets: a benchmark's splits and metric, read through the data layer's one resolver.

`--dataset` is a dataset spec (the grammar is in `equimod_zoo.data`): a known name
(`flowers102`, with its official splits, columns and metric from `equimod_zoo.data.known`),
`hf:OWNER/NAME`, or a local folder in the parquet, CUB_200_2011 or imagefolder layout. A named
dataset loads from the Hugging Face Hub, or from `--data-dir` in any local layout. Every split
becomes an `ImageSource` with labels indexing one shared list of class names; `check_labels`
checks what a transfer protocol needs of them.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from equimod_zoo.data.known import KNOWN_DATASETS, METRICS, KnownDataset, MetricName
from equimod_zoo.data.sources import ImageSource, SubsetSource, evenly_spaced
from equimod_zoo.data.spec import DataSpec, find_split, open_splits, resolve_spec
from equimod_zoo.errors import DatasetSpecError, UserError

SPLIT_ROLES = ("train", "val", "test")


@dataclass(frozen=True)
class TransferDataset(KnownDataset):
    """A transfer benchmark: a known dataset's row (where it lives, its splits, columns and metric), or the
    same facts for a dataset given by a spec, with what the spec adds."""

    val_if_present: bool = False  # for user datasets: use `val_split` when the data has it
    local_dir: str | None = None  # a dataset given as a folder carries it
    spec: str | None = None  # the dataset spec it was resolved from

    @classmethod
    def from_known(cls, row: KnownDataset) -> TransferDataset:
        return cls(**asdict(row), spec=row.name)

    def split_name(self, role: str) -> str | None:
        return {"train": self.train_split, "val": self.val_split, "test": self.test_split}[role]


# Transfer's benchmarks: the known datasets (equimod_zoo.data.known) marked as such.
DATASETS: dict[str, TransferDataset] = {name: TransferDataset.from_known(row) for name, row in KNOWN_DATASETS.items()
                                        if row.transfer}


def resolve_dataset(spec: str, *, image_column: str | None = None, label_column: str | None = None,
                    metric: MetricName | None = None) -> TransferDataset:
    """A dataset spec (a known name, `hf:OWNER/NAME`, `imagefolder:DIR`, a folder...) with optional overrides."""
    if spec in KNOWN_DATASETS:
        dataset = TransferDataset.from_known(KNOWN_DATASETS[spec])
    else:
        data = resolve_spec(spec)
        if data.layout == "hub":
            dataset = TransferDataset(name=spec, title=spec, hub_id=data.location, val_split="validation",
                                      val_if_present=True, image_column=None, label_column=None, spec=spec)
        else:
            given = spec.split(":", 1)[1] if spec.startswith(("parquet:", "cub:", "imagefolder:")) else spec
            name = f"{data.layout}:{Path(data.location).name}"
            dataset = TransferDataset(name=name, title=name, hub_id=None,
                                      val_split="val" if data.layout == "imagefolder" else "validation",
                                      val_if_present=True, image_column=None, label_column=None,
                                      local_dir=given, spec=f"{data.layout}:{data.location}")
    overrides = {k: v for k, v in (("image_column", image_column), ("label_column", label_column),
                                   ("metric", metric)) if v is not None}
    if "metric" in overrides and overrides["metric"] not in METRICS:
        raise UserError(f"--metric must be top1 or mean_per_class_accuracy, got {metric!r}")
    return replace(dataset, **overrides)


@dataclass
class TransferSplits:
    """A dataset's loaded splits; `val` is None when the dataset has no validation split."""

    dataset: TransferDataset
    source: str  # where the images came from: "hub:ID", "parquet:DIR", "cub:DIR" or "imagefolder:DIR"
    train: ImageSource
    test: ImageSource
    val: ImageSource | None
    label_names: list[str] | None
    num_classes: int

    def splits(self) -> dict[str, ImageSource]:
        return {role: s for role, s in (("train", self.train), ("val", self.val), ("test", self.test)) if s is not None}

    def sizes(self) -> dict[str, int]:
        return {role: len(s) for role, s in self.splits().items()}


def locate_data(dataset: TransferDataset, data_dir: str | Path | None = None) -> DataSpec:
    """Where the dataset loads from (the Hub, or a local folder and its layout), without loading it."""
    if data_dir is not None and dataset.local_dir is not None:
        return resolve_spec(os.fspath(data_dir), option="--data-dir")
    if dataset.spec is None:
        if dataset.hub_id is None:
            raise DatasetSpecError(f"{dataset.name}: has no Hub id; give --data-dir")
        return resolve_spec(f"hf:{dataset.hub_id}", data_dir=data_dir)
    return resolve_spec(dataset.spec, data_dir=data_dir)


def data_source(dataset: TransferDataset, data_dir: str | Path | None = None, *, limit: int | None = None) -> str:
    """Where the images come from, as recorded in results and cache keys: `hub:ID` or `LAYOUT:/abs/folder`
    (with `, limit N` for a quick look at part of it)."""
    return locate_data(dataset, data_dir).describe() + (f", limit {limit}" if limit is not None else "")


def load_splits(dataset: TransferDataset, *, data_dir: str | Path | None = None,
                cache_dir: str | Path | None = None, limit: int | None = None) -> TransferSplits:
    """Load train, (val,) test of `dataset` from `data_dir` (any supported local layout) or the Hub, and check them.

    `limit` (a quick look) keeps at most that many images of each split, evenly spaced over it, and
    drops val/test images of classes the kept train images do not have.
    """
    data = locate_data(dataset, data_dir)
    wanted = [name for name in (dataset.split_name(role) for role in SPLIT_ROLES) if name is not None]
    opened = open_splits(data, wanted, image_column=dataset.image_column, label_column=dataset.label_column,
                         cache_dir=Path(cache_dir) / "datasets" if cache_dir is not None else None)
    where = f"hub dataset {data.location}" if data.layout == "hub" else data.location
    splits: dict[str, ImageSource] = {}
    for role in SPLIT_ROLES:
        name = dataset.split_name(role)
        if name is None:
            continue
        found = find_split(opened.sources, name)
        if found is None:
            if role == "val" and dataset.val_if_present:
                continue
            raise UserError(f"{dataset.name}: {where} has no {name!r} split (it has {opened.available})")
        splits[role] = opened.sources[found]
    if limit is not None:
        splits = _limited(splits, limit)
    num_classes = check_labels(dataset, splits, opened.label_names)
    source = data.describe() + (f", limit {limit}" if limit is not None else "")
    return TransferSplits(dataset, source, splits["train"], splits["test"], splits.get("val"),
                          opened.label_names, num_classes)


def _limited(splits: dict[str, ImageSource], limit: int) -> dict[str, ImageSource]:
    kept = {role: evenly_spaced(source, limit) for role, source in splits.items()}
    seen = {kept["train"].label(i) for i in range(len(kept["train"]))}
    for role in ("val", "test"):
        if role in kept:
            source = kept[role]
            kept[role] = SubsetSource(source, [i for i in range(len(source)) if source.label(i) in seen])
    return kept


def check_labels(dataset: TransferDataset, splits: dict[str, ImageSource], names: list[str] | None) -> int:
    """Every split non-empty and labelled within range; every val/test class seen in train. Returns the class count."""
    column = dataset.label_column or "label"
    labels = {}
    for role, images in splits.items():
        where = f"{dataset.name} split {dataset.split_name(role)!r}"
        if len(images) == 0:
            raise UserError(f"{where}: no images")
        values = [images.label(i) for i in range(len(images))]
        if any(v is None for v in values):
            raise UserError(f"{where}: has no labels; name the label column with --label-column")
        labels[role] = values
    num_classes = len(names) if names is not None else max(max(v) for v in labels.values()) + 1
    for role, values in labels.items():
        where = f"{dataset.name} split {dataset.split_name(role)!r} column {column!r}"
        bad = next((v for v in values if not 0 <= v < num_classes), None)
        if bad is not None:
            raise UserError(f"{where}: label {bad} is outside 0..{num_classes - 1}"
                            + (f" ({num_classes} class names)" if names is not None else ""))
    seen = set(labels["train"])
    for role in ("val", "test"):
        unseen = sorted(set(labels.get(role, ())) - seen)
        if unseen:
            name = f" ({names[unseen[0]]!r})" if names is not None else ""
            raise UserError(f"{dataset.name} split {dataset.split_name(role)!r} column {column!r}: class {unseen[0]}"
                            f"{name} has no images in split {dataset.train_split!r}"
                            + (f", nor {len(unseen) - 1} more" if len(unseen) > 1 else ""))
    return num_classes
