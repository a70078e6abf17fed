"""`find_neighbours`: query images against extracted feature stores, one model each, drawn side by side.

Each store is searched with its own model: the queries go through the very extraction that made
the store (`extract_features` with the store's model, data config, decoding and normalisation,
checked against its extraction.json), then through an exact cosine index of the store
(`equimod_zoo.retrieval.index`, written in clip-retrieval's layout). The stores must hold the
same gallery images in the same order, so every row of the sheet searches the same images and
only the model differs. A gallery image with the query's own key (the same file, or the same
dataset row) is not its own neighbour.

    OUT/neighbours.png                  the contact sheet: per query, one row per model
    OUT/neighbours.json                 the neighbours (gallery row, image_path, cosine), stores, models
    OUT/indices/NAME/image.index ...    each store's exact index, metadata and infos

OUT is new, empty, or an earlier output of this function, which is then replaced; anything else
is refused (`equimod_zoo.retrieval.output`).
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from equimod_zoo.atomic import atomic_path
from equimod_zoo.data.sources import ImageSource, folder_source
from equimod_zoo.data.spec import DataSpec, resolve_spec
from equimod_zoo.errors import UserError
from equimod_zoo.extraction.extract import Precision, extract_features
from equimod_zoo.extraction.store import FeatureStore, load_features, read_info, read_metadata
from equimod_zoo.loading import ResolvedModel, resolve_model
from equimod_zoo.retrieval.gallery import GalleryImages, thumbnail
from equimod_zoo.retrieval.index import build_index, faiss_module, search, write_index
from equimod_zoo.retrieval.output import (INDICES, MANIFEST, SHEET, WRITTEN_BY, check_neighbours_output,
                                         remove_stale_indices, write_manifest)
from equimod_zoo.retrieval.sheet import SheetLayout, SheetRow, Tile, draw_sheet, label_width, sheet_size

MAX_K = 32  # neighbours a row: columns of the sheet
MAX_QUERIES = 32
MAX_STORES = 8  # models compared on one sheet
MIN_THUMBNAIL, MAX_THUMBNAIL = 16, 256  # px
MAX_SHEET_PIXELS = 50_000_000  # refused before it is allocated
MAX_INDEX_BYTES = 16 * 2**30  # an exact index holds every feature as float32 in memory


@dataclass
class Neighbour:
    row: int  # the gallery row: the index id, and the row of the store's metadata
    image_path: str
    similarity: float  # cosine


@dataclass
class ModelNeighbours:
    """One store searched with its model."""

    store: Path
    model: str
    weights_sha256: str
    index: Path  # the index folder (image.index, image.json, metadata/)
    neighbours: list[list[Neighbour]]  # per query, nearest first


@dataclass
class NeighboursResult:
    out: Path
    sheet: Path
    queries: list[str]  # the queries' keys, in sheet order
    models: list[ModelNeighbours]
    layout: SheetLayout  # where each tile of the sheet is
    unreadable: list[str] = field(default_factory=list)  # images drawn as crossed tiles: they did not open


def find_neighbours(
    stores: Sequence[str | os.PathLike[str]],
    queries: ImageSource | str | os.PathLike[str],
    *,
    out: str | os.PathLike[str],
    k: int = 8,
    models: Sequence[str | os.PathLike[str] | ResolvedModel | None] | None = None,
    dataset: DataSpec | str | None = None,
    thumbnail_size: int = 64,
    palette: int | None = None,
    exclude_self: bool = True,
    device: str | None = None,
    precision: Precision = "auto",
    cache_dir: str | None = None,
    progress: bool = True,
) -> NeighboursResult:
    """The `k` nearest gallery images of each query under each store's model, as a sheet and indices in `out`.

    Args:
        stores: feature stores (`extract_features` outputs) of the same gallery images, one per model.
        queries: an `ImageSource` (e.g. `FirstImages(open_split(...), 8)`), or a folder of images.
        out: the output folder (see the module docstring).
        k: neighbours per query.
        models: the model of each store (a zoo name or a model folder), None for the one its
            extraction.json names; each must have the weights sha256 the store records.
        dataset: the dataset the stores were extracted from, when their images are dataset rows
            (`SPLIT/ROW`): the sheet reads the rows back from it.
        thumbnail_size: the side of each tile, in pixels.
        palette: save the sheet with this many colours (2 to 256, an adaptive palette): a third
            of the bytes, for a sheet that goes into a document. None keeps full colour.
        exclude_self: a gallery image with the query's key is not its neighbour.
        device: where the queries are embedded (default: CUDA when available).
        precision: as `extract_features`'s; the one the stores were extracted with gives queries
            the very features the same images have in the stores.
        cache_dir: the `datasets` cache for `dataset`.
        progress: show a progress bar.
    """
    stores = [Path(s) for s in stores]
    out = Path(out)
    _check_options(stores, models, k, thumbnail_size, palette)
    check_neighbours_output(out)
    faiss_module()  # the one-line hint now, before any work
    query_source = folder_source(queries) if isinstance(queries, (str, os.PathLike)) else queries
    if not 1 <= len(query_source) <= MAX_QUERIES:
        raise UserError(f"{len(query_source)} query images: a sheet shows 1 to {MAX_QUERIES}; give fewer "
                        f"(--limit N or --spread N)")
    query_keys = [query_source.key(i) for i in range(len(query_source))]
    query_thumbnails = _query_thumbnails(query_source, thumbnail_size)  # a query that does not open: said now
    if isinstance(dataset, str):
        dataset = resolve_spec(dataset)
    gallery = GalleryImages(dataset, cache_dir=cache_dir)

    infos, keys, features = _read_stores(stores, gallery)
    _check_k(k, stores[0], keys, query_keys if exclude_self else [])
    resolved = [_resolve(store, info, model) for store, info, model in
                zip(stores, infos, models or [None] * len(stores))]
    _check_sheet_size(len(query_keys), [model.label for model in resolved], k, thumbnail_size)
    index_names = _index_names(stores)
    metadata = read_metadata(stores[0])
    gallery_labels = metadata.column("label").to_pylist() if "label" in metadata.column_names else None
    results: list[ModelNeighbours] = []
    query_labels: list[int | None] = [query_source.label(i) for i in range(len(query_source))]
    with _progress(progress) as bar:
        task = bar.add_task("neighbours", total=2 * len(stores) + 1)
        for store, info, model, feats, name in zip(stores, infos, resolved, features, index_names):
            bar.update(task, description=f"embedding {len(query_keys)} queries with {model.label}")
            embedded = _embed_queries(query_source, store, info, model, device=device, precision=precision)
            bar.update(task, advance=1, description=f"indexing {len(keys)} images of {store.name}")
            index = build_index(feats)
            if not (out / MANIFEST).exists():  # OUT is ours from its first file on; an earlier output keeps its own
                write_manifest(out, {"written_by": WRITTEN_BY, "complete": False})
            folder = write_index(out / INDICES / name, index, read_metadata(store).replace_schema_metadata(None),
                                 extra_infos={"store": str(store), "model": model.label,
                                              "weights_sha256": model.weights_sha256})
            found = _search(index, embedded, k, keys, query_keys if exclude_self else [])
            results.append(ModelNeighbours(store, model.label, model.weights_sha256, folder.parent, found))
            bar.update(task, advance=1)
        bar.update(task, description=f"drawing {len(query_keys)} x {len(stores)} rows")
        sheet, layout, unreadable = _sheet(query_source, query_thumbnails, query_labels, results, gallery,
                                           gallery_labels, same_classes=_same_classes(query_source, infos[0]), k=k,
                                           size=thumbnail_size)
        bar.update(task, advance=1)

    if palette is not None:
        sheet = sheet.quantize(colors=palette)
    with atomic_path(out / SHEET) as tmp:
        sheet.save(tmp, format="PNG", optimize=True)
    remove_stale_indices(out, index_names)
    write_manifest(out, _manifest(query_keys, results, k, thumbnail_size, exclude_self, out))
    return NeighboursResult(out, out / SHEET, query_keys, results, layout, unreadable)


def _check_options(stores: list[Path], models: Sequence[Any] | None, k: int, thumbnail_size: int,
                   palette: int | None) -> None:
    if not 1 <= len(stores) <= MAX_STORES:
        raise UserError(f"{len(stores)} feature stores: a sheet compares 1 to {MAX_STORES}")
    if models is not None and len(models) != len(stores):
        raise UserError(f"{len(models)} models for {len(stores)} feature stores: give one --model per store, "
                        f"in order, or none")
    if not 1 <= k <= MAX_K:
        raise UserError(f"k={k}: give 1 to {MAX_K} neighbours a query")
    if not MIN_THUMBNAIL <= thumbnail_size <= MAX_THUMBNAIL:
        raise UserError(f"thumbnail size {thumbnail_size}: give {MIN_THUMBNAIL} to {MAX_THUMBNAIL} pixels")
    if palette is not None and not 2 <= palette <= 256:
        raise UserError(f"palette {palette}: a PNG palette holds 2 to 256 colours")


def _read_stores(stores: list[Path], gallery: GalleryImages) -> tuple[list[dict], list[str], list[np.ndarray]]:
    """Each store's info and features, checked complete, within the size limit and of one gallery."""
    infos, features, first_keys = [], [], None
    for store in stores:
        if not store.is_dir():
            raise UserError(f"{store}: no such feature store; extract one with `equimod-zoo extract ... --out "
                            f"{store}`")
        info = FeatureStore(store).complete_info()
        rows = next((n for n in (info.get("num_extracted"), info.get("input", {}).get("num_images"))
                     if isinstance(n, int)), 0)
        needed = rows * info.get("num_features", 0) * 4
        if needed > MAX_INDEX_BYTES:
            raise UserError(f"{store}: {rows} x {info['num_features']} features need {needed / 2**30:.1f} GiB for "
                            f"an exact index, over the limit of {MAX_INDEX_BYTES / 2**30:.0f} GiB")
        keys, feats = load_features(store)
        if not keys:
            raise UserError(f"{store}: holds no features (every image failed); nothing to search")
        if first_keys is None:
            first_keys = keys
        elif keys != first_keys:
            raise UserError(f"{store}: holds other gallery images than {stores[0]} "
                            f"({_first_difference(keys, first_keys)}); extract every store from the same images, "
                            f"so that only the model differs")
        gallery.check_store(store, info, keys)
        infos.append(info)
        features.append(feats)
    assert first_keys is not None
    return infos, first_keys, features


def _first_difference(keys: list[str], reference: list[str]) -> str:
    if len(keys) != len(reference):
        return f"{len(keys)} images, not {len(reference)}"
    row = next(i for i, (a, b) in enumerate(zip(keys, reference)) if a != b)
    return f"row {row} is {keys[row]}, not {reference[row]}"


def _check_k(k: int, store: Path, keys: list[str], excluded: list[str]) -> None:
    counts = _key_counts(keys)
    available = len(keys) - max((counts.get(key, 0) for key in excluded), default=0)
    if k > available:
        besides = f" ({available} besides a query itself)" if available != len(keys) else ""
        raise UserError(f"k={k}: {store} holds {len(keys)} images{besides}; ask for at most {available} neighbours")


def _key_counts(keys: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    return counts


def _resolve(store: Path, info: dict[str, Any], model: str | os.PathLike[str] | ResolvedModel | None) -> ResolvedModel:
    """The store's model, verified to be the weights it was extracted with."""
    recorded = info.get("model")
    if model is None:
        try:
            resolved = resolve_model(str(recorded))
        except UserError as error:
            raise UserError(f"{store}: its model {recorded!r} cannot be loaded ({error}); give its folder with "
                            f"--model") from None
    else:
        resolved = resolve_model(model)
    if resolved.weights_sha256 != info.get("weights_sha256"):
        raise UserError(f"{store}: was extracted with weights sha256 {str(info.get('weights_sha256'))[:12]}... "
                        f"({recorded}), not {resolved.label}'s {resolved.weights_sha256[:12]}...; give the model it "
                        f"was extracted with")
    return resolved


def _index_names(stores: list[Path]) -> list[str]:
    """One index folder name per store: its folder name, numbered when two stores share one."""
    names: list[str] = []
    for store in stores:
        base = store.resolve().name or "store"
        name, n = base, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names


def _embed_queries(queries: ImageSource, store: Path, info: dict[str, Any], model: ResolvedModel, *,
                   device: str | None, precision: Precision) -> np.ndarray:
    """The queries' features, extracted exactly as the store's images were."""
    size = (info.get("data_config") or {}).get("input_size") or [0, 0, 0]
    with tempfile.TemporaryDirectory(prefix="equimod-zoo-queries-") as tmp:
        extract_features(queries, out=tmp, model=model, batch_size=min(64, len(queries)), num_workers=0,
                         normalize=bool(info.get("normalize")),
                         resolution=size[-1] if size[-2] == size[-1] > 0 else None,
                         jpeg_draft=(info.get("decode") or {}).get("jpeg_draft_size") is not None, device=device,
                         precision=precision, compile=False, progress=False)
        made = read_info(tmp)
        for key in ("data_config", "decode"):
            if key in info and made.get(key) != info[key]:
                raise UserError(f"{store}: was extracted with {key} {info[key]}, but {model.label} now gives "
                                f"{made.get(key)}; extract the store again")
        keys, features = load_features(tmp)
        if len(keys) != len(queries):
            path, error = FeatureStore(tmp).failures(made["num_shards"])[0]
            raise UserError(f"query {path}: could not be read ({error})")
    return features


def _search(index: Any, queries: np.ndarray, k: int, keys: list[str], excluded: list[str]) -> list[list[Neighbour]]:
    """The `k` nearest of each query, leaving out gallery rows with the query's key."""
    counts = _key_counts(keys)
    extra = max((counts.get(key, 0) for key in excluded), default=0)
    similarities, rows = search(index, queries, min(k + extra, len(keys)))
    found = []
    for q in range(len(queries)):
        own = excluded[q] if excluded else None
        kept = [Neighbour(int(r), keys[r], float(s)) for s, r in zip(similarities[q], rows[q])
                if r >= 0 and keys[r] != own]
        found.append(kept[:k])
    return found


def _same_classes(queries: ImageSource, info: dict[str, Any]) -> bool:
    """Whether query and gallery labels index the same classes (then a same-class neighbour is framed)."""
    names = info.get("label_names")
    return names is not None and queries.label_names is not None and list(queries.label_names) == list(names)


def _check_sheet_size(queries: int, labels: list[str], k: int, size: int) -> None:
    width, height = sheet_size(rows=queries * len(labels), columns=1 + k, groups=queries, thumbnail=size,
                               label_width=label_width(labels))
    if width * height > MAX_SHEET_PIXELS:
        raise UserError(f"a sheet of {width} x {height} pixels is over the limit of {MAX_SHEET_PIXELS}; give fewer "
                        f"queries, a smaller k or smaller thumbnails")


def _query_thumbnails(queries: ImageSource, size: int) -> list[Image.Image]:
    tiles = []
    for i in range(len(queries)):
        try:
            tiles.append(thumbnail(lambda: queries.open(i), size))
        except Exception as error:  # any bad file: the one line names it
            raise UserError(f"query {queries.key(i)}: could not be read ({type(error).__name__}: "
                            f"{' '.join(str(error).split())})") from None
    return tiles


def _sheet(queries: ImageSource, query_thumbnails: list[Image.Image], query_labels: list[int | None],
           results: list[ModelNeighbours],
           gallery: GalleryImages, gallery_labels: list[int] | None, *, same_classes: bool, k: int,
           size: int) -> tuple[Image.Image, SheetLayout, list[str]]:
    unreadable: list[str] = []
    cache: dict[str, Image.Image | None] = {}

    def tile_image(key: str, opener: Any) -> Image.Image | None:
        if key not in cache:
            try:
                cache[key] = thumbnail(opener, size)
            except Exception:  # any image that does not open: a crossed tile, listed, and the sheet goes on
                cache[key] = None
                unreadable.append(key)
        return cache[key]

    names = queries.label_names
    rows = []
    for q in range(len(queries)):
        key = queries.key(q)
        query_tile = Tile(query_thumbnails[q], _query_caption(key, query_labels[q], names))
        for result in results:
            tiles = [query_tile]
            for n in result.neighbours[q]:
                match = (same_classes and gallery_labels is not None and query_labels[q] is not None
                         and gallery_labels[n.row] == query_labels[q])
                tiles.append(Tile(tile_image(n.image_path, gallery.opener(n.image_path)), f"{n.similarity:.3f}",
                                  framed=match))
            rows.append(SheetRow(result.model, tiles))
    header = ["query", *(str(i) for i in range(1, k + 1))]
    sheet, layout = draw_sheet(rows, thumbnail=size, group_size=len(results), header=header)
    return sheet, layout, unreadable


def _query_caption(key: str, label: int | None, names: list[str] | None) -> str:
    if label is not None and names is not None and 0 <= label < len(names):
        return names[label]
    return Path(key).name


def _manifest(query_keys: list[str], results: list[ModelNeighbours], k: int, size: int, exclude_self: bool,
              out: Path) -> dict[str, Any]:
    return {
        "written_by": WRITTEN_BY,
        "complete": True,
        "k": k,
        "thumbnail_size": size,
        "exclude_self": exclude_self,
        "metric": "cosine (exact: faiss IndexFlatIP on L2-normalised features)",
        "sheet": SHEET,
        "queries": query_keys,
        "models": [{
            "store": str(r.store), "model": r.model, "weights_sha256": r.weights_sha256,
            "index": str(r.index.relative_to(out)),
            "neighbours": [[{"row": n.row, "image_path": n.image_path, "similarity": round(n.similarity, 6)}
                            for n in found] for found in r.neighbours],
        } for r in results],
    }


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), disable=not enabled)
