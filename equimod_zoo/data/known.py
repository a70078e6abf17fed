"""The datasets the zoo knows by name: one row each, read by the resolver, transfer and the model cards.

A row says where a dataset lives on the Hugging Face Hub, what its splits and columns are
called there, and how it is scored. `transfer` benchmarks are Kornblith et al. 2019's
datasets with their metric choice (mean per-class accuracy where the test classes are
unbalanced); ImageNet-1k is known for the cards of models pre-trained on it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MetricName = Literal["top1", "mean_per_class_accuracy"]
METRICS: tuple[MetricName, ...] = ("top1", "mean_per_class_accuracy")


@dataclass(frozen=True)
class KnownDataset:
    """A dataset by name: its title, Hub id, split and column names, and metric."""

    name: str
    title: str
    hub_id: str | None
    train_split: str = "train"
    test_split: str = "test"  # the split results are reported on
    val_split: str | None = None  # the official validation split, if the dataset has one
    image_column: str | None = "image"  # None: the first Image feature
    label_column: str | None = "label"  # None: the first ClassLabel feature
    metric: MetricName = "top1"
    transfer: bool = True  # one of transfer's benchmarks


KNOWN_DATASETS: dict[str, KnownDataset] = {row.name: row for row in (
    KnownDataset("flowers102", "Oxford Flowers-102", "dpdl-benchmark/oxford_flowers102", val_split="validation",
                 metric="mean_per_class_accuracy"),
    KnownDataset("cub200", "CUB-200-2011", "bentrevett/caltech-ucsd-birds-200-2011"),
    KnownDataset("cifar10", "CIFAR-10", "uoft-cs/cifar10", image_column="img"),
    KnownDataset("cifar100", "CIFAR-100", "uoft-cs/cifar100", image_column="img", label_column="fine_label"),
    KnownDataset("pets", "Oxford-IIIT Pet", "timm/oxford-iiit-pet", metric="mean_per_class_accuracy"),
    KnownDataset("dtd", "Describable Textures", "tanganke/dtd"),
    # the Hub's name for food101's official test split is "validation"
    KnownDataset("food101", "Food-101", "ethz/food101", test_split="validation"),
    KnownDataset("caltech101", "Caltech-101", "dpdl-benchmark/caltech101", metric="mean_per_class_accuracy"),
    KnownDataset("stl10", "STL-10", "tanganke/stl10"),
    KnownDataset("imagenet-1k", "ImageNet-1k", "ILSVRC/imagenet-1k", test_split="validation", transfer=False),
)}

# Caveats a model card states when the name or description of its training data holds the word.
DATA_CAVEATS = {
    "jpeg": "The training images are a JPEG re-encoding (quality about 75) of the original lossless files; "
            "accuracies measured on it are slightly below those on the original data.",
}


def dataset_key(name: str) -> str:
    """The known name a data name refers to (`cifar10-jpeg` -> `cifar10`), or the name itself."""
    matches = [key for key in KNOWN_DATASETS
               if name == key or name.startswith(f"{key}-") or name.startswith(f"{key} ")]
    return max(matches, key=len) if matches else name


def known_dataset(name: str) -> KnownDataset:
    """The row `name` refers to (see `dataset_key`); for an unknown name, a row with only its name."""
    return KNOWN_DATASETS.get(dataset_key(name), KnownDataset(name, name, None, transfer=False))


def data_caveats(text: str) -> list[str]:
    """The caveats a card must state for data whose name and description are `text`."""
    lowered = text.lower()
    return [caveat for word, caveat in DATA_CAVEATS.items() if word in lowered]
