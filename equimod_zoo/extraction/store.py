"""The feature store: sharded, resumable, in clip-retrieval's layout.

    OUT/extraction.json                model, weights sha256, data config, input fingerprint, label names, counts
    OUT/features/shard_00000.npy       float16, one row per image of the shard that decoded
    OUT/metadata/shard_00000.parquet   index (input position), path, width, height[, label]
    OUT/failures/shard_00000.csv       path,error for the shard's images that did not decode
    OUT/failures.csv                   every failure, in input order (rebuilt at the end of a run)

Shard k holds inputs [k * shard_size, (k + 1) * shard_size). Each file is written atomically,
the metadata last: a shard is done when its features and metadata both exist, so an
interrupted run loses at most the shard in progress and a rerun skips the done ones.

Readers: `load_features(OUT)` -> (paths, float32 array); `read_metadata(OUT)` -> pyarrow.Table;
`label_names(OUT)`; `read_info(OUT)`.
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from equimod_zoo.atomic import atomic_open, atomic_path, atomic_write_text

INFO_FILE = "extraction.json"
FAILURES_FILE = "failures.csv"
FEATURES_DIR = "features"
METADATA_DIR = "metadata"
FAILURES_DIR = "failures"
FORMAT_VERSION = 1
# What must match for a rerun to continue an existing OUT rather than mix two extractions.
IDENTITY_KEYS = ("format", "weights_sha256", "input", "data_config", "decode", "normalize", "shard_size")


class FeatureStore:
    """One extraction's output folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def features_path(self, shard: int) -> Path:
        return self.root / FEATURES_DIR / f"shard_{shard:05d}.npy"

    def metadata_path(self, shard: int) -> Path:
        return self.root / METADATA_DIR / f"shard_{shard:05d}.parquet"

    def failures_path(self, shard: int) -> Path:
        return self.root / FAILURES_DIR / f"shard_{shard:05d}.csv"

    @property
    def info_path(self) -> Path:
        return self.root / INFO_FILE

    def is_done(self, shard: int) -> bool:
        return self.features_path(shard).is_file() and self.metadata_path(shard).is_file()

    def read_info(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.info_path.read_text())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError as error:
            raise ValueError(f"{self.info_path}: not valid JSON ({error})") from None

    def write_info(self, info: dict[str, Any]) -> None:
        atomic_write_text(self.info_path, json.dumps(info, indent=2) + "\n")

    def begin(self, info: dict[str, Any]) -> None:
        """Start or continue an extraction; refuse an OUT that holds a different one."""
        if self.root.exists() and not self.root.is_dir():
            raise NotADirectoryError(f"{self.root}: exists and is not a folder")
        existing = self.read_info()
        if existing is None:
            if (self.root / FEATURES_DIR).exists() or (self.root / METADATA_DIR).exists():
                raise ValueError(f"{self.root}: has features/ or metadata/ but no {INFO_FILE}; "
                                 f"it was not written by equimod-zoo extract. Choose another --out")
        else:
            different = [k for k in IDENTITY_KEYS if existing.get(k) != info.get(k)]
            if different:
                raise ValueError(
                    f"{self.root}: holds an extraction with a different {', '.join(different)} "
                    f"(model {existing.get('model')!r}, {existing.get('input', {}).get('num_images')} images); "
                    f"use a new --out, or delete it to start over"
                )
        self.write_info({**(existing or {}), **info, "complete": False})

    def write_shard(self, shard: int, features: np.ndarray, metadata: pa.Table,
                    failures: Sequence[tuple[str, str]]) -> None:
        """Write one shard; the metadata goes last, so the shard counts as done only when it is whole."""
        if len(features) != metadata.num_rows:
            raise ValueError(f"shard {shard}: {len(features)} feature rows for {metadata.num_rows} metadata rows")
        with atomic_open(self.failures_path(shard), "w", newline="", encoding="utf-8") as handle:
            _write_failures(handle, failures)
        with atomic_open(self.features_path(shard), "wb") as handle:
            np.save(handle, np.ascontiguousarray(features, dtype=np.float16), allow_pickle=False)
        with atomic_path(self.metadata_path(shard)) as tmp:
            pq.write_table(metadata, tmp)

    def failures(self, num_shards: int) -> list[tuple[str, str]]:
        rows: list[tuple[str, str]] = []
        for shard in range(num_shards):
            path = self.failures_path(shard)
            if path.is_file():
                with open(path, newline="", encoding="utf-8") as handle:
                    rows.extend((row["path"], row["error"]) for row in csv.DictReader(handle))
        return rows

    def write_failures_csv(self, num_shards: int) -> int:
        """Gather the shards' failures into OUT/failures.csv; returns how many there are."""
        rows = self.failures(num_shards)
        buffer = io.StringIO(newline="")
        _write_failures(buffer, rows)
        with atomic_open(self.root / FAILURES_FILE, "w", newline="", encoding="utf-8") as handle:
            handle.write(buffer.getvalue())
        return len(rows)

    def complete_info(self) -> dict[str, Any]:
        """The info of a finished extraction, or a clear error saying what is missing."""
        info = self.read_info()
        if info is None:
            raise FileNotFoundError(f"{self.root}: no {INFO_FILE}; not an equimod-zoo feature folder")
        missing = [k for k in range(info["num_shards"]) if not self.is_done(k)]
        if missing:
            raise ValueError(f"{self.root}: extraction is incomplete ({len(missing)} of {info['num_shards']} shards "
                             f"missing, first {missing[0]}); rerun the same extract command to finish it")
        return info


def metadata_table(indices: Sequence[int], paths: Sequence[str], widths: Sequence[int], heights: Sequence[int],
                   labels: Sequence[int] | None) -> pa.Table:
    columns = {
        "index": pa.array(indices, pa.int64()),
        "path": pa.array(paths, pa.string()),
        "width": pa.array(widths, pa.int32()),
        "height": pa.array(heights, pa.int32()),
    }
    if labels is not None:
        columns["label"] = pa.array(labels, pa.int64())
    return pa.table(columns)


def read_info(out: str | Path) -> dict[str, Any]:
    """OUT/extraction.json: model, weights sha256, data config, counts, label names."""
    info = FeatureStore(out).read_info()
    if info is None:
        raise FileNotFoundError(f"{Path(out) / INFO_FILE}: missing; not an equimod-zoo feature folder")
    return info


def read_metadata(out: str | Path) -> pa.Table:
    """All shards' metadata in input order: index, path, width, height and, when labelled, label."""
    store = FeatureStore(out)
    info = store.complete_info()
    tables = [pq.read_table(store.metadata_path(k)) for k in range(info["num_shards"])]
    if not tables:
        return metadata_table([], [], [], [], [] if info.get("has_labels") else None)
    return pa.concat_tables(tables)


def label_names(out: str | Path) -> list[str] | None:
    """The class names that the `label` column indexes, or None when unnamed or unlabelled."""
    return read_info(out).get("label_names")


def load_features(out: str | Path) -> tuple[list[str], np.ndarray]:
    """The paths (or dataset ids) and features of every image that decoded, in input order.

    Returns `(paths, features)` with `features` a float32 array of shape (num_images, dim).
    """
    store = FeatureStore(out)
    info = store.complete_info()
    paths: list[str] = []
    blocks: list[np.ndarray] = []
    for shard in range(info["num_shards"]):
        block = np.load(store.features_path(shard), allow_pickle=False)
        shard_paths = pq.read_table(store.metadata_path(shard), columns=["path"]).column("path").to_pylist()
        if len(block) != len(shard_paths):
            raise ValueError(f"{store.features_path(shard)}: {len(block)} rows but its metadata has {len(shard_paths)}; "
                             f"delete both files and rerun the extract command")
        paths.extend(shard_paths)
        blocks.append(block)
    features = (np.concatenate(blocks) if blocks else np.zeros((0, info["num_features"]), np.float16))
    return paths, features.astype(np.float32)


def _write_failures(handle: Any, rows: Sequence[tuple[str, str]]) -> None:
    writer = csv.writer(handle)
    writer.writerow(("path", "error"))
    writer.writerows(rows)
