"""The feature store: sharded, resumable, in clip-retrieval's layout.

    OUT/img_emb/img_emb_{N}.npy          float16, one row per image of shard N that decoded
    OUT/metadata/metadata_{N}.parquet    image_path, index (input position), width, height[, label]
    OUT/failures/failures_{N}.csv        path,error for shard N's images that did not decode
    OUT/failures.csv                     every failure, in input order (rebuilt at the end of a run)
    OUT/extraction.json                  model, weights sha256, data config, input identity, label names, counts

These are the file names and columns clip-retrieval's inference writes (`N` zero-padded to the
digits of the shard count, as its writer does), so autofaiss and clip-retrieval's index and
back-end read an extraction unchanged; `label`, `width`, `height` and `index` are extra columns.
Shard k holds inputs [k * shard_size, (k + 1) * shard_size). Each file is written atomically,
the metadata last, and the metadata records a fingerprint of the shard's inputs (paths, labels,
each file's size, mtime, ctime and inode): a shard counts as done only when both files are whole
and that fingerprint still matches, so a rerun skips finished shards and redoes changed or damaged
ones.

Readers: `load_features(OUT)` -> (paths, float32 array); `read_metadata(OUT)` -> pyarrow.Table;
`label_names(OUT)`; `read_info(OUT)`. They also read the earlier layout (format 1:
features/shard_00000.npy, metadata/shard_00000.parquet with a `path` column).
"""
from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from equimod_zoo.atomic import atomic_open, atomic_path, atomic_write_text
from equimod_zoo.errors import NonFiniteFeaturesError, UserError
from equimod_zoo.json_file import read_json
from equimod_zoo.limits import MAX_CLASSES, MAX_SHARDS, check_limit
from equimod_zoo.output_folder import OutputLayout, check_output_folder

INFO_FILE = "extraction.json"
FAILURES_FILE = "failures.csv"
FEATURES_DIR = "img_emb"
METADATA_DIR = "metadata"
FAILURES_DIR = "failures"
PATH_COLUMN = "image_path"  # clip-retrieval's name
FORMAT_VERSION = 2
LEGACY_FORMAT = 1  # features/shard_00000.npy + metadata/shard_00000.parquet with a `path` column
# What must match for a rerun to continue an existing OUT rather than mix two extractions.
IDENTITY_KEYS = ("format", "weights_sha256", "input", "data_config", "decode", "normalize", "shard_size")
_SHARD_META_KEY = b"equimod_zoo"
# What extraction writes into OUT; an earlier extraction is known by its extraction.json.
EXTRACTION_OUTPUT = OutputLayout(
    "extract", frozenset((INFO_FILE, FAILURES_FILE, FEATURES_DIR, METADATA_DIR, FAILURES_DIR, "features")),
    lambda folder: (folder / INFO_FILE).is_file())
# extraction.json: the fields readers rely on, and the type each must have
_INFO_FIELDS: dict[str, tuple[type, ...]] = {
    "format": (int,), "num_shards": (int,), "shard_size": (int,), "num_features": (int,),
    "input": (dict,), "label_names": (list, type(None)), "has_labels": (bool,),
}


def shard_number(shard: int, num_shards: int) -> str:
    """clip-retrieval's `N`: the shard index zero-padded to the digits of the shard count."""
    return str(shard).zfill(int(math.log10(max(num_shards, 1))) + 1)


class FeatureStore:
    """One extraction's output folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._layout: tuple[int, int] | None = None  # (format, num_shards), from extraction.json

    def _names(self) -> tuple[int, int]:
        if self._layout is None:
            info = self.read_info()
            if info is None:
                raise FileNotFoundError(f"{self.info_path}: missing; not an equimod-zoo feature folder")
            self._layout = (info["format"], info["num_shards"])
        return self._layout

    def features_path(self, shard: int) -> Path:
        version, num_shards = self._names()
        if version == LEGACY_FORMAT:
            return self.root / "features" / f"shard_{shard:05d}.npy"
        return self.root / FEATURES_DIR / f"img_emb_{shard_number(shard, num_shards)}.npy"

    def metadata_path(self, shard: int) -> Path:
        version, num_shards = self._names()
        if version == LEGACY_FORMAT:
            return self.root / METADATA_DIR / f"shard_{shard:05d}.parquet"
        return self.root / METADATA_DIR / f"metadata_{shard_number(shard, num_shards)}.parquet"

    def failures_path(self, shard: int) -> Path:
        version, num_shards = self._names()
        if version == LEGACY_FORMAT:
            return self.root / FAILURES_DIR / f"shard_{shard:05d}.csv"
        return self.root / FAILURES_DIR / f"failures_{shard_number(shard, num_shards)}.csv"

    @property
    def info_path(self) -> Path:
        return self.root / INFO_FILE

    def is_done(self, shard: int, inputs_sha256: str | None = None) -> bool:
        """Whether shard `shard` is written whole (and, given `inputs_sha256`, from those very inputs)."""
        try:
            schema = pq.read_schema(self.metadata_path(shard))
            num_rows = pq.read_metadata(self.metadata_path(shard)).num_rows
        except (OSError, pa.ArrowException):  # missing, or cut short: its footer is gone
            return False
        if inputs_sha256 is not None:
            try:
                recorded = json.loads((schema.metadata or {}).get(_SHARD_META_KEY, b"{}"))
            except (json.JSONDecodeError, UnicodeDecodeError):  # damaged: the shard is extracted again
                return False
            if not isinstance(recorded, dict) or recorded.get("inputs_sha256") != inputs_sha256:
                return False
        return _npy_rows(self.features_path(shard)) == num_rows

    def read_info(self) -> dict[str, Any] | None:
        try:
            info = read_json(self.info_path, expect=None)
        except FileNotFoundError:
            return None
        return _checked_info(info, self.info_path)

    def write_info(self, info: dict[str, Any]) -> None:
        atomic_write_text(self.info_path, json.dumps(info, indent=2) + "\n")
        self._layout = (info["format"], info["num_shards"])

    def check_out(self, *, sources: Sequence[str | Path] = ()) -> None:
        """Refuse an OUT that is not new, empty or an earlier extraction (`equimod_zoo.output_folder`), or
        that is or holds the images read (`sources`)."""
        check_output_folder(self.root, EXTRACTION_OUTPUT, sources=sources)

    def begin(self, info: dict[str, Any], *, sources: Sequence[str | Path] = ()) -> None:
        """Start or continue an extraction; refuse an OUT that holds a different one or someone else's files."""
        self.check_out(sources=sources)
        existing = self.read_info()
        if existing is not None:
            different = [k for k in IDENTITY_KEYS if existing.get(k) != info.get(k)]
            if different:
                raise UserError(
                    f"{self.root}: holds an extraction with a different {', '.join(different)} "
                    f"(model {existing.get('model')!r}, {existing.get('input', {}).get('num_images')} images); "
                    f"use a new --out, or delete it to start over"
                )
        self.write_info({**(existing or {}), **info, "complete": False})

    def write_shard(self, shard: int, features: np.ndarray, metadata: pa.Table,
                    failures: Sequence[tuple[str, str]], *, inputs_sha256: str) -> None:
        """Write one shard; the metadata goes last, so the shard counts as done only when it is whole."""
        if len(features) != metadata.num_rows:
            raise RuntimeError(f"shard {shard}: {len(features)} feature rows for {metadata.num_rows} metadata rows")
        with atomic_open(self.failures_path(shard), "w", newline="", encoding="utf-8") as handle:
            _write_failures(handle, failures)
        with atomic_open(self.features_path(shard), "wb") as handle:
            np.save(handle, np.ascontiguousarray(features, dtype=np.float16), allow_pickle=False)
        record = json.dumps({"inputs_sha256": inputs_sha256}).encode()
        metadata = metadata.replace_schema_metadata({**(metadata.schema.metadata or {}), _SHARD_META_KEY: record})
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
            raise UserError(f"{self.root}: extraction is incomplete ({len(missing)} of {info['num_shards']} shards "
                            f"missing or damaged, first {self.metadata_path(missing[0]).name}); rerun the same "
                            f"extract command to finish it")
        return info


def metadata_table(indices: Sequence[int], paths: Sequence[str], widths: Sequence[int], heights: Sequence[int],
                   labels: Sequence[int] | None) -> pa.Table:
    columns = {
        PATH_COLUMN: pa.array(paths, pa.string()),
        "index": pa.array(indices, pa.int64()),
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
    """All shards' metadata in input order: image_path, index, width, height and, when labelled, label."""
    store = FeatureStore(out)
    info = store.complete_info()
    tables = [_read_shard_metadata(store, info, k) for k in range(info["num_shards"])]
    if not tables:
        return metadata_table([], [], [], [], [] if info.get("has_labels") else None)
    table = pa.concat_tables(tables)
    if "label" in table.column_names and table.num_rows:
        _check_labels(table.column("label").to_numpy(), info, store)
    return table


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
        shard_paths = _read_shard_metadata(store, info, shard, columns=[_path_column(info)]).column(0).to_pylist()
        if len(block) != len(shard_paths):
            raise UserError(f"{store.features_path(shard)}: {len(block)} rows but its metadata has "
                            f"{len(shard_paths)}; delete both files and rerun the extract command")
        if not np.isfinite(block).all():  # no probe learns anything from NaN: say where it came from
            raise NonFiniteFeaturesError(f"{store.features_path(shard)}: holds NaN or inf features (model "
                                         f"{info.get('model')!r}); they were not written by this equimod-zoo, which "
                                         f"refuses them; extract them again")
        paths.extend(shard_paths)
        blocks.append(block)
    features = (np.concatenate(blocks) if blocks else np.zeros((0, info["num_features"]), np.float16))
    return paths, features.astype(np.float32)


def _path_column(info: dict[str, Any]) -> str:
    return "path" if info["format"] == LEGACY_FORMAT else PATH_COLUMN


def _read_shard_metadata(store: FeatureStore, info: dict[str, Any], shard: int,
                         columns: list[str] | None = None) -> pa.Table:
    """One shard's metadata, its path column named `image_path` whatever the layout."""
    table = pq.read_table(store.metadata_path(shard), columns=columns).replace_schema_metadata(None)
    if info["format"] == LEGACY_FORMAT:
        table = table.rename_columns([PATH_COLUMN if c == "path" else c for c in table.column_names])
        if columns is None:  # the new column order: image_path first
            table = table.select([PATH_COLUMN, *[c for c in table.column_names if c != PATH_COLUMN]])
    return table


def _check_labels(labels: np.ndarray, info: dict[str, Any], store: FeatureStore) -> None:
    names = info.get("label_names")
    limit = len(names) if names else MAX_CLASSES
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= limit:
        bad = low if low < 0 else high
        what = f"the {len(names)} label_names of {store.info_path}" if names else f"{MAX_CLASSES} classes"
        raise UserError(f"{store.root / METADATA_DIR}: label {bad} is not a class index within {what}")


def _checked_info(info: Any, path: Path) -> dict[str, Any]:
    """extraction.json with the fields readers rely on, of the right types; else one line saying which."""
    if not isinstance(info, dict):
        raise UserError(f"{path}: expected a JSON object, found {type(info).__name__}; not an equimod-zoo "
                        f"extraction.json")
    for key, types in _INFO_FIELDS.items():
        if key in info and (not isinstance(info[key], types) or (types == (int,) and isinstance(info[key], bool))):
            raise UserError(f"{path}: {key} is {info[key]!r}, not {' or '.join(t.__name__ for t in types)}; the file "
                            f"is damaged or not an equimod-zoo extraction.json")
    for key in ("format", "num_shards"):
        if key not in info:
            raise UserError(f"{path}: no {key!r}; the file is damaged or not an equimod-zoo extraction.json")
    if info["format"] not in (LEGACY_FORMAT, FORMAT_VERSION):
        raise UserError(f"{path}: format {info['format']} is not one this equimod-zoo reads "
                        f"({LEGACY_FORMAT} or {FORMAT_VERSION})")
    if info["num_shards"] < 0 or info.get("num_features", 0) < 0 or info.get("shard_size", 1) < 1:
        raise UserError(f"{path}: num_shards, num_features and shard_size must be counts")
    check_limit(f"{path}: num_shards", info["num_shards"], MAX_SHARDS)  # every reader loops over them
    num_images = info["input"].get("num_images") if isinstance(info.get("input"), dict) else None
    if isinstance(num_images, int) and "shard_size" in info and info["num_shards"] != math.ceil(
            num_images / info["shard_size"]):
        raise UserError(f"{path}: num_shards {info['num_shards']} does not fit {num_images} images in shards of "
                        f"{info['shard_size']}; the file is damaged or not an equimod-zoo extraction.json")
    names = info.get("label_names")
    if names is not None and not all(isinstance(n, str) for n in names):
        raise UserError(f"{path}: label_names must be a list of strings")
    return info


def _npy_rows(path: Path) -> int | None:
    """The row count of a whole float16 .npy file, read from its header; None when missing or cut short."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(handle)
            data_start = handle.tell()
    except (OSError, ValueError):
        return None
    if dtype != np.float16 or len(shape) != 2:
        return None
    if path.stat().st_size != data_start + shape[0] * shape[1] * dtype.itemsize:
        return None
    return int(shape[0])


def _write_failures(handle: Any, rows: Sequence[tuple[str, str]]) -> None:
    writer = csv.writer(handle)
    writer.writerow(("path", "error"))
    writer.writerows(rows)
