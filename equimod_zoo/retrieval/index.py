"""An exact nearest-neighbour index of a feature store, in the layout clip-retrieval's back-end reads.

    FOLDER/image.index                    faiss IndexFlatIP over the L2-normalised features: cosine, exact
    FOLDER/image.json                     its infos, with the keys autofaiss writes (index_key "Flat", ...)
    FOLDER/metadata/metadata_0.parquet    the store's metadata, row i describing index id i

These are the names `clip_retrieval.clip_index` gives an index that autofaiss builds from an
extraction, and what `clip back` opens as an index folder. faiss is the `[index]` extra,
imported only here, when an index is built or read.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from equimod_zoo.atomic import atomic_path, atomic_write_text
from equimod_zoo.optional import require

INDEX_FILE = "image.index"
INFOS_FILE = "image.json"
METADATA_FILE = "metadata/metadata_0.parquet"
INDEX_NAMES = frozenset({INDEX_FILE, INFOS_FILE, "metadata"})  # what an index folder holds


def faiss_module() -> ModuleType:
    """faiss, or one line naming the extra that installs it."""
    return require("faiss", "index", "a nearest-neighbour index")


def normalized(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32, C order), so inner products are cosine similarities."""
    features = np.ascontiguousarray(features, dtype=np.float32)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, np.finfo(np.float32).tiny)


def build_index(features: np.ndarray) -> Any:
    """An exact inner-product index over the L2-normalised `features` (num_images, dim)."""
    faiss = faiss_module()
    index = faiss.IndexFlatIP(features.shape[1])
    index.add(normalized(features))
    return index


def search(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(cosine similarities, gallery rows) of the `k` nearest gallery images of each query, nearest first."""
    similarities, rows = index.search(normalized(queries), k)
    return similarities, rows


def write_index(folder: str | Path, index: Any, metadata: pa.Table, *, extra_infos: dict[str, Any]) -> Path:
    """Write `index`, its infos and `metadata` into `folder`, each file atomically; returns the index path."""
    faiss = faiss_module()
    folder = Path(folder)
    if metadata.num_rows != index.ntotal:
        raise RuntimeError(f"{metadata.num_rows} metadata rows for an index of {index.ntotal} vectors")
    with atomic_path(folder / METADATA_FILE) as tmp:
        pq.write_table(metadata, tmp)
    with atomic_path(folder / INDEX_FILE) as tmp:
        faiss.write_index(index, str(tmp))
    size = (folder / INDEX_FILE).stat().st_size
    infos = {  # autofaiss's keys, for an exact flat index; speed and recall are not measured here
        "index_key": "Flat", "index_param": "", "index_path": INDEX_FILE, "size in bytes": size,
        "reconstruction error %": 0.0, "nb vectors": int(index.ntotal), "vectors dimension": int(index.d),
        "compression ratio": 4.0 * index.ntotal * index.d / size, "metric_type": "ip", "normalized": True,
        **extra_infos,
    }
    atomic_write_text(folder / INFOS_FILE, json.dumps(infos, indent=2) + "\n")
    return folder / INDEX_FILE


def read_index(folder: str | Path) -> Any:
    """The faiss index of an index folder written by `write_index` (or by autofaiss under these names)."""
    return faiss_module().read_index(str(Path(folder) / INDEX_FILE))
