"""Where transfer keeps extracted features and results, keyed so that a rerun never recomputes them.

    CACHE/features/DATASET/MODEL-SHA/SPLIT-RESpx-PRECISION-SOURCE/   an extraction output folder per split
    CACHE/results/DATASET/MODEL-SHA/PROTOCOL-RESpx-PRECISION-SOURCE.json

MODEL is the model's name, SHA the first 16 hex digits of its weights' sha256 (so retrained
weights under the same name get new entries), SOURCE a short hash of where the images came from
(the Hub id or the local folder) and, for a local folder, of the state of every file in it
(`data_state`): an image edited in place gives new entries, never the old features or result.
CACHE is `$EQUIMOD_ZOO_CACHE`, else `~/.cache/equimod_zoo`.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from equimod_zoo.atomic import atomic_write_text
from equimod_zoo.cache import file_state
from equimod_zoo.extraction.store import FeatureStore



@dataclass(frozen=True)
class CacheKey:
    """What a cached feature folder or result depends on."""

    model: str
    weights_sha256: str
    dataset: str
    source: str  # "hub:ID" or "parquet:/abs/folder" ...
    resolution: int
    precision: str = "fp32"  # of the extracted features: bf16 ones score a few tenths differently

    def _parts(self) -> tuple[str, str, str]:
        source = hashlib.sha256(self.source.encode()).hexdigest()[:8]
        return _slug(self.dataset), f"{_slug(self.model)}-{self.weights_sha256[:16]}", f"{self.resolution}px-{self.precision}-{source}"

    def features_dir(self, cache_dir: str | Path, split: str) -> Path:
        dataset, model, suffix = self._parts()
        return Path(cache_dir) / "features" / dataset / model / f"{_slug(split)}-{suffix}"

    def result_path(self, cache_dir: str | Path, protocol: str) -> Path:
        dataset, model, suffix = self._parts()
        return Path(cache_dir) / "results" / dataset / model / f"{_slug(protocol)}-{suffix}.json"


def data_state(location: str | Path) -> str:
    """A digest of every file below a local dataset `location` (or of the file itself): path and `file_state`."""
    root = Path(location)
    digest = hashlib.sha256()
    if root.is_file():
        digest.update(json.dumps([root.name, *file_state(root)]).encode())
        return digest.hexdigest()
    for folder, subfolders, files in os.walk(root):
        subfolders.sort()
        for name in sorted(files):
            path = Path(folder) / name
            relative = os.fsencode(path.relative_to(root).as_posix()).decode("utf-8", "backslashreplace")
            digest.update(json.dumps([relative, *file_state(path)]).encode())
    return digest.hexdigest()


def features_cached(folder: str | Path, *, num_images: int, weights_sha256: str) -> bool:
    """True when `folder` holds a finished extraction of `num_images` inputs by these weights."""
    store = FeatureStore(folder)
    try:
        info = store.read_info()
    except ValueError:  # a half-written info file: extract again
        return False
    return (info is not None and info.get("complete") is True and info.get("weights_sha256") == weights_sha256
            and info.get("input", {}).get("num_images") == num_images
            and all(store.is_done(k) for k in range(info.get("num_shards", 0))))


def read_result(path: str | Path) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_result(path: str | Path, result: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")


def _slug(text: str) -> str:
    """A file-name-safe version of a name or path (`../runs/simclr` -> `runs_simclr`)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "_"
