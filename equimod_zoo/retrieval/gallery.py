"""A feature store's images, shown again: each `image_path` back to pixels, through the one decoder.

A store names each image by the key its source gave (`equimod_zoo.data.sources`): a file path for
folders, file lists, CUB and imagefolder datasets; `SPLIT/ROW` for a parquet or Hugging Face
dataset. Files reopen by path. Dataset rows reopen from the dataset the store was extracted from,
which the caller names: extraction.json records the split's description (split, row count,
columns), not where the dataset lives, so that description is checked against the one given.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from equimod_zoo.data.images import load_rgb
from equimod_zoo.data.sources import ImageSource, open_image_file
from equimod_zoo.data.spec import DataSpec, open_split
from equimod_zoo.errors import UserError

_ROW_KEY = re.compile(r"(?P<split>[^/]+)/(?P<row>\d+)")
# extraction.json's input.source for a dataset read by rows (listed, or streamed)
_DATASET_SOURCES = ("HFDatasetSource(", "IterableSource(")


def thumbnail(opener: Callable[[], Image.Image], size: int) -> Image.Image:
    """A `size` x `size` RGB thumbnail: the image decoded by `load_rgb`, centre-cropped to a square."""
    decoded = load_rgb(opener, draft_size=size, resize_to=size)
    return ImageOps.fit(decoded.image, (size, size), Image.Resampling.BICUBIC)


def holds_dataset_rows(info: dict[str, Any]) -> bool:
    """Whether a store's images are dataset rows (`SPLIT/ROW`) rather than files."""
    recorded = str(info.get("input", {}).get("source", ""))
    return any(name in recorded for name in _DATASET_SOURCES)


class GalleryImages:
    """Opens the images that stores name, from files or from `dataset`'s splits (opened once each)."""

    def __init__(self, dataset: DataSpec | None = None, *, cache_dir: str | None = None) -> None:
        self.dataset, self.cache_dir = dataset, cache_dir
        self._splits: dict[str, ImageSource] = {}
        self._rows: set[str] = set()  # keys that name rows of `dataset` (from the stores checked)

    def check_store(self, store: Path, info: dict[str, Any], keys: Sequence[str]) -> None:
        """Refuse a store whose dataset rows cannot be shown from `dataset` (none given, or another one)."""
        if not holds_dataset_rows(info) or not keys:
            return
        recorded = str(info["input"]["source"])
        if self.dataset is None:
            raise UserError(f"{store}: holds dataset rows ({keys[0]}, ...), not files; give the --dataset it was "
                            f"extracted from to show them")
        rows: dict[str, int] = {}
        for key in keys:
            match = _ROW_KEY.fullmatch(key)
            if match is None:
                raise UserError(f"{store}: image_path {key!r} is not a dataset row SPLIT/ROW although "
                                f"extraction.json says {recorded}; the store is damaged")
            rows[match["split"]] = max(rows.get(match["split"], 0), int(match["row"]))
        for split, last in rows.items():
            source = self._split(split)
            same = repr(source) in recorded if "HFDatasetSource(" in recorded else last < len(source)
            if not same:
                raise UserError(f"{store}: was extracted from {recorded}, not from {self.dataset.spec} split "
                                f"{split!r} ({source!r}); give the --dataset it was extracted from")
        self._rows.update(keys)

    def opener(self, key: str) -> Callable[[], Image.Image]:
        """What opens the image named `key`, for `thumbnail` (raises there, not here, when it cannot)."""
        match = _ROW_KEY.fullmatch(key)
        if match is not None and key in self._rows:
            source, row = self._split(match["split"]), int(match["row"])
            return lambda: source.open(row)
        return lambda: open_image_file(key)

    def _split(self, split: str) -> ImageSource:
        if split not in self._splits:
            assert self.dataset is not None
            self._splits[split] = open_split(self.dataset, split, cache_dir=self.cache_dir)
        return self._splits[split]
