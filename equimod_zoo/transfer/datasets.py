"""Transfer datasets as data: one row per dataset (Hub id, splits, columns, metric), and their loaders.

A dataset loads from the Hugging Face Hub by default, or from a local folder in one of three
layouts, detected from its contents:

    parquet       DIR/train.parquet, DIR/validation.parquet, DIR/test.parquet (or sharded
                  DIR/**/train-00000-of-00002.parquet ...): the Hub's own layout
    CUB_200_2011  DIR/CUB_200_2011/{images.txt, image_class_labels.txt, train_test_split.txt,
                  classes.txt, images/} (DIR may be CUB_200_2011 itself): the original release
    imagefolder   DIR/train/CLASS/*.jpg, DIR/test/CLASS/*.jpg (optionally DIR/val or DIR/validation)

Every split becomes an `ImageSource` with labels indexing one shared list of class names.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from equimod_zoo.extraction.sources import FileListSource, HFDatasetSource, ImageSource, scan_images

MetricName = Literal["top1", "mean_per_class_accuracy"]
SPLIT_ROLES = ("train", "val", "test")


@dataclass(frozen=True)
class TransferDataset:
    """A transfer benchmark: where it lives, how its splits and columns are named, how it is scored."""

    name: str
    hub_id: str | None
    train_split: str = "train"
    test_split: str = "test"
    val_split: str | None = None  # the official validation split, if the dataset has one
    image_column: str | None = "image"  # None: the first Image feature
    label_column: str | None = "label"  # None: the first ClassLabel feature
    metric: MetricName = "top1"
    val_if_present: bool = False  # for user datasets: use `val_split` when the data has it
    local_dir: str | None = None  # imagefolder:DIR datasets carry their folder

    def split_name(self, role: str) -> str | None:
        return {"train": self.train_split, "val": self.val_split, "test": self.test_split}[role]


# Kornblith et al. 2019's metric choice: mean per-class accuracy where the test classes are unbalanced.
DATASETS: dict[str, TransferDataset] = {row.name: row for row in (
    TransferDataset("flowers102", "dpdl-benchmark/oxford_flowers102", val_split="validation",
                    metric="mean_per_class_accuracy"),
    TransferDataset("cub200", "bentrevett/caltech-ucsd-birds-200-2011"),
    TransferDataset("cifar10", "uoft-cs/cifar10", image_column="img"),
    TransferDataset("cifar100", "uoft-cs/cifar100", image_column="img", label_column="fine_label"),
    TransferDataset("pets", "timm/oxford-iiit-pet", metric="mean_per_class_accuracy"),
    TransferDataset("dtd", "tanganke/dtd"),
    TransferDataset("food101", "ethz/food101", test_split="validation"),  # the Hub's name for the official test split
    TransferDataset("caltech101", "dpdl-benchmark/caltech101", metric="mean_per_class_accuracy"),
    TransferDataset("stl10", "tanganke/stl10"),
)}


def resolve_dataset(spec: str, *, image_column: str | None = None, label_column: str | None = None,
                    metric: MetricName | None = None) -> TransferDataset:
    """A built-in name (`flowers102`), `hf:OWNER/NAME` or `imagefolder:DIR`, with optional column overrides."""
    if spec in DATASETS:
        dataset = DATASETS[spec]
    elif spec.startswith("hf:") and len(spec) > 3:
        dataset = TransferDataset(spec, spec[3:], val_split="validation", val_if_present=True,
                                  image_column=None, label_column=None)
    elif spec.startswith("imagefolder:") and len(spec) > len("imagefolder:"):
        folder = spec.split(":", 1)[1]
        dataset = TransferDataset(f"imagefolder:{Path(folder).name}", None, val_split="val", val_if_present=True,
                                  local_dir=folder)
    else:
        raise KeyError(f"unknown dataset {spec!r}: use one of {', '.join(DATASETS)}, hf:OWNER/NAME or imagefolder:DIR")
    overrides = {k: v for k, v in (("image_column", image_column), ("label_column", label_column),
                                   ("metric", metric)) if v is not None}
    if "metric" in overrides and overrides["metric"] not in ("top1", "mean_per_class_accuracy"):
        raise ValueError(f"--metric must be top1 or mean_per_class_accuracy, got {metric!r}")
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


def locate_data(dataset: TransferDataset, data_dir: str | Path | None = None) -> tuple[str, Path | None]:
    """The layout (`hub`, `parquet`, `cub` or `imagefolder`) and folder the dataset loads from, without loading it."""
    folder = data_dir if data_dir is not None else dataset.local_dir
    if folder is None:
        if dataset.hub_id is None:
            raise ValueError(f"{dataset.name}: has no Hub id; give --data-dir")
        return "hub", None
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such data folder for {dataset.name}")
    cub = _cub_root(folder)
    if cub is not None:
        return "cub", cub.resolve()
    if any(folder.rglob("*.parquet")):
        return "parquet", folder.resolve()
    if (folder / "train").is_dir():
        return "imagefolder", folder.resolve()
    raise FileNotFoundError(f"{folder}: not a dataset folder: expected train/validation/test .parquet files, "
                            f"a CUB_200_2011 folder, or train/ and test/ class folders")


def data_source(dataset: TransferDataset, data_dir: str | Path | None = None) -> str:
    """Where the images come from, as recorded in results and cache keys: `hub:ID` or `LAYOUT:/abs/folder`."""
    layout, folder = locate_data(dataset, data_dir)
    return f"hub:{dataset.hub_id}" if folder is None else f"{layout}:{folder}"


def load_splits(dataset: TransferDataset, *, data_dir: str | Path | None = None,
                cache_dir: str | Path | None = None) -> TransferSplits:
    """Load train, (val,) test of `dataset` from `data_dir` (any supported local layout) or the Hub, and check them."""
    layout, folder = locate_data(dataset, data_dir)
    if layout == "cub":
        splits, names = _load_cub(folder)
    elif layout == "parquet":
        splits, names = _load_parquet(dataset, folder, cache_dir)
    elif layout == "imagefolder":
        splits, names = _load_imagefolder(dataset, folder)
    else:
        splits, names = _load_hub(dataset, cache_dir)
    num_classes = check_labels(dataset, splits, names)
    return TransferSplits(dataset, data_source(dataset, data_dir), splits["train"], splits["test"], splits.get("val"),
                          names, num_classes)


def check_labels(dataset: TransferDataset, splits: dict[str, ImageSource], names: list[str] | None) -> int:
    """Every split non-empty and labelled within range; every val/test class seen in train. Returns the class count."""
    column = dataset.label_column or "label"
    labels = {}
    for role, images in splits.items():
        where = f"{dataset.name} split {dataset.split_name(role)!r}"
        if len(images) == 0:
            raise ValueError(f"{where}: no images")
        values = [images.label(i) for i in range(len(images))]
        if any(v is None for v in values):
            raise ValueError(f"{where}: has no labels; name the label column with --label-column")
        labels[role] = values
    num_classes = len(names) if names is not None else max(max(v) for v in labels.values()) + 1
    for role, values in labels.items():
        where = f"{dataset.name} split {dataset.split_name(role)!r} column {column!r}"
        bad = next((v for v in values if not 0 <= v < num_classes), None)
        if bad is not None:
            raise ValueError(f"{where}: label {bad} is outside 0..{num_classes - 1}"
                             + (f" ({num_classes} class names)" if names is not None else ""))
    seen = set(labels["train"])
    for role in ("val", "test"):
        unseen = sorted(set(labels.get(role, ())) - seen)
        if unseen:
            name = f" ({names[unseen[0]]!r})" if names is not None else ""
            raise ValueError(f"{dataset.name} split {dataset.split_name(role)!r} column {column!r}: class {unseen[0]}"
                             f"{name} has no images in split {dataset.train_split!r}"
                             + (f", nor {len(unseen) - 1} more" if len(unseen) > 1 else ""))
    return num_classes


# --- Hub and parquet ------------------------------------------------------------------------------

def _load_hub(dataset: TransferDataset, cache_dir: str | Path | None) -> tuple[dict[str, ImageSource], list[str] | None]:
    import datasets

    loaded = datasets.load_dataset(dataset.hub_id, cache_dir=_hf_cache(cache_dir))
    return _sources(dataset, {name: loaded[name] for name in loaded}, f"hub dataset {dataset.hub_id}")


def _load_parquet(dataset: TransferDataset, folder: Path,
                  cache_dir: str | Path | None) -> tuple[dict[str, ImageSource], list[str] | None]:
    import datasets

    files: dict[str, list[str]] = {}
    for path in sorted(folder.rglob("*.parquet")):
        match = re.fullmatch(r"([A-Za-z]\w*?)(?:-\d+-of-\d+)?(?:-[0-9a-f]+)?", path.stem)
        if match:
            files.setdefault(match.group(1), []).append(str(path))
    tables = {name: datasets.load_dataset("parquet", data_files={name: paths}, split=name,
                                          cache_dir=_hf_cache(cache_dir))
              for name, paths in files.items() if name in {dataset.train_split, dataset.val_split, dataset.test_split}}
    return _sources(dataset, tables, str(folder), available=sorted(files))


def _sources(dataset: TransferDataset, tables: dict[str, Any], where: str,
             available: list[str] | None = None) -> tuple[dict[str, ImageSource], list[str] | None]:
    available = available if available is not None else sorted(tables)
    splits: dict[str, ImageSource] = {}
    for role in SPLIT_ROLES:
        name = dataset.split_name(role)
        if name is None:
            continue
        if name not in tables:
            if role == "val" and dataset.val_if_present:
                continue
            raise ValueError(f"{dataset.name}: {where} has no {name!r} split (it has {available})")
        try:
            splits[role] = HFDatasetSource(tables[name], dataset.image_column, dataset.label_column, name=name)
        except (KeyError, ValueError) as error:
            message = error.args[0] if isinstance(error, KeyError) else str(error)
            raise type(error)(f"{dataset.name} split {name!r}: {message}") from None
    names = {role: s.label_names for role, s in splits.items()}
    if len({tuple(n) if n is not None else None for n in names.values()}) > 1:
        raise ValueError(f"{dataset.name}: the splits name their classes differently "
                         f"({', '.join(f'{dataset.split_name(r)}: {len(n or [])} names' for r, n in names.items())})")
    return splits, names["train"]


def _hf_cache(cache_dir: str | Path | None) -> str | None:
    return str(Path(cache_dir) / "datasets") if cache_dir is not None else None


# --- CUB_200_2011 ---------------------------------------------------------------------------------

CUB_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")


def _cub_root(folder: Path) -> Path | None:
    for candidate in (folder, folder / "CUB_200_2011"):
        if (candidate / "images.txt").is_file():
            return candidate
    return None


def _load_cub(root: Path) -> tuple[dict[str, ImageSource], list[str]]:
    tables = {}
    for name in CUB_FILES:
        path = root / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; a CUB_200_2011 folder needs {', '.join(CUB_FILES)}")
        tables[name] = _id_table(path)
    class_ids = sorted(tables["classes.txt"], key=int)
    class_index = {cid: i for i, cid in enumerate(class_ids)}
    names = [tables["classes.txt"][cid] for cid in class_ids]
    paths: dict[str, list[str]] = {"train": [], "test": []}
    labels: dict[str, list[int]] = {"train": [], "test": []}
    for image_id, relative in tables["images.txt"].items():
        for name in ("image_class_labels.txt", "train_test_split.txt"):
            if image_id not in tables[name]:
                raise ValueError(f"{root / name}: no row for image {image_id} ({relative})")
        class_id = tables["image_class_labels.txt"][image_id]
        if class_id not in class_index:
            raise ValueError(f"{root / 'image_class_labels.txt'}: image {image_id} has class {class_id}, "
                             f"which classes.txt does not list")
        role = {"1": "train", "0": "test"}.get(tables["train_test_split.txt"][image_id])
        if role is None:
            raise ValueError(f"{root / 'train_test_split.txt'}: image {image_id} is neither 1 (train) nor 0 (test)")
        paths[role].append(str(root / "images" / relative))
        labels[role].append(class_index[class_id])
    return {role: FileListSource(paths[role], labels[role], names) for role in ("train", "test")}, names


def _id_table(path: Path) -> dict[str, str]:
    """`ID VALUE` lines (the value may hold spaces) as a dict."""
    rows = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            parts = line.strip().split(maxsplit=1)
            if len(parts) != 2:
                raise ValueError(f"{path}:{number}: expected 'ID VALUE', got {line!r}")
            rows[parts[0]] = parts[1]
    return rows


# --- imagefolder ----------------------------------------------------------------------------------

def _load_imagefolder(dataset: TransferDataset, folder: Path) -> tuple[dict[str, ImageSource], list[str]]:
    folders = {"train": folder / "train", "test": folder / "test"}
    if not folders["test"].is_dir():
        raise FileNotFoundError(f"{folders['test']}: missing; an imagefolder dataset needs train/ and test/ folders")
    if dataset.val_split is not None:  # only datasets with a validation split read one
        val = next((folder / n for n in (dataset.val_split, "val", "validation") if (folder / n).is_dir()), None)
        if val is not None:
            folders["val"] = val
        elif not dataset.val_if_present:
            raise ValueError(f"{dataset.name}: {folder} has no {dataset.val_split}/ folder (its validation split)")
    found = {role: _class_images(path) for role, path in folders.items()}
    names = sorted({cls for cls, _ in found["train"]})
    if not names:
        raise ValueError(f"{folders['train']}: no images in class sub-folders")
    index = {name: i for i, name in enumerate(names)}
    splits: dict[str, ImageSource] = {}
    for role, items in found.items():
        unknown = sorted({cls for cls, _ in items} - set(index))
        if unknown:
            raise ValueError(f"{dataset.name} split {folders[role].name!r}: class folder {unknown[0]!r} has no images "
                             f"in {folders['train']}")
        splits[role] = FileListSource([p for _, p in items], [index[c] for c, _ in items], names)
    return splits, names


def _class_images(root: Path) -> list[tuple[str, Path]]:
    paths = scan_images(root)
    absolute = Path(os.path.abspath(root))
    items = []
    for path in paths:
        parts = path.relative_to(absolute).parts
        if len(parts) < 2:
            raise ValueError(f"{root}: {parts[0]} sits outside any class folder")
        items.append((parts[0], path))
    return items
