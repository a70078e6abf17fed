"""The dataset spec: one grammar, one resolver, for `train --data`, `extract --dataset`, `transfer
--dataset` and `probe-augs --dataset` (see the package docstring for the grammar).

`resolve_spec` decides what a spec names without reading any image; `open_splits` and
`open_split` turn it into `ImageSource`s, one per split, whose labels index one shared list of
class names.
"""
from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from equimod_zoo.data.known import KNOWN_DATASETS, KnownDataset
from equimod_zoo.errors import DataUnavailableError, DatasetSpecError, UnknownNameError, UserError
from equimod_zoo.data.sources import FileListSource, HFDatasetSource, ImageSource, scan_images

Layout = Literal["hub", "parquet", "cub", "imagefolder"]
LAYOUTS: tuple[Layout, ...] = ("hub", "parquet", "cub", "imagefolder")
# Folder names an imagefolder tree's splits may have; "val", "valid" and "dev" mean "validation".
SPLIT_FOLDERS = ("train", "val", "valid", "validation", "dev", "test")
_VALIDATION = {"val", "valid", "validation", "dev"}
CUB_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")
# A parquet file's split: its name up to a `-00000-of-00002` shard number or a `-1a2b3c` hash.
_PARQUET_SPLIT = re.compile(r"([A-Za-z]\w*?)(?:-\d+-of-\d+)?(?:-[0-9a-f]+)?")




@dataclass(frozen=True)
class DataSpec:
    """What a dataset spec names: where the images are, in which layout, and the known row if any."""

    spec: str  # as given
    layout: Layout
    location: str  # a Hub id, or an absolute file or folder
    known: KnownDataset | None = None
    hub_id: str | None = field(default=None)  # the Hub id of a named dataset, even when read locally
    # Image cells holding a path, and CUB's images.txt, may name files outside the dataset's folder
    outside_paths: bool = False

    def __str__(self) -> str:
        return self.spec

    @property
    def name(self) -> str:
        """The dataset's name: the known name, the Hub id, or the folder (file) name."""
        if self.known is not None:
            return self.known.name
        if self.layout == "hub":
            return self.location
        path = Path(self.location)
        return path.stem if path.is_file() else path.name

    def describe(self) -> str:
        """Where the images come from, for results and cache keys: `hub:ID` or `LAYOUT:/abs/path`."""
        return f"{self.layout}:{self.location}"


def resolve_spec(spec: str | os.PathLike[str] | DataSpec, *, data_dir: str | os.PathLike[str] | None = None,
                 option: str = "--dataset", allow_outside_paths: bool = False) -> DataSpec:
    """Decide what `spec` names, without reading images. `option` names the argument in errors.

    `data_dir`, when given, is where a named dataset (a known name or `hf:OWNER/NAME`) lives on
    disk, in any local layout. `allow_outside_paths` lets the dataset's rows name image files
    outside its own folder (`--allow-outside-paths`). A DataSpec passes through.
    """
    if isinstance(spec, DataSpec):
        return spec
    resolved = _resolve(os.fspath(spec), data_dir=data_dir, option=option)
    return dataclasses.replace(resolved, outside_paths=allow_outside_paths) if allow_outside_paths else resolved


def _resolve(text: str, *, data_dir: str | os.PathLike[str] | None, option: str) -> DataSpec:
    if not text.strip():
        raise DatasetSpecError(f"{option}: empty; give a dataset name, a folder, a parquet file or a Hub id")
    if data_dir is not None and not os.fspath(data_dir).strip():
        raise DatasetSpecError("--data-dir: empty; give the folder that holds the dataset")
    prefix, _, rest = text.partition(":")
    if prefix in ("parquet", "cub", "imagefolder") and rest:
        if data_dir is not None:
            raise DatasetSpecError(f"{option} {text} names its folder; drop --data-dir {data_dir}")
        return _local(text, Path(rest), option=option, layout=prefix)
    known = KNOWN_DATASETS.get(text)
    hub_id = known.hub_id if known is not None else rest if prefix == "hf" and rest else None
    if known is not None or hub_id is not None:
        if data_dir is not None:
            return _local(text, Path(data_dir), option="--data-dir", known=known, hub_id=hub_id)
        if hub_id is None:
            raise DatasetSpecError(f"{option} {text}: has no Hub id; give --data-dir")
        return DataSpec(text, "hub", hub_id, known, hub_id)
    if data_dir is not None:
        if re.fullmatch(r"[\w.-]+", text):  # a name for the local copy, which the known table does not have
            return _local(text, Path(data_dir), option="--data-dir")
        raise DatasetSpecError(f"{option} {text}: --data-dir goes with a dataset name "
                               f"({', '.join(KNOWN_DATASETS)}, hf:OWNER/NAME or a name of your own); "
                               f"give the folder once")
    path = Path(text).expanduser()
    if path.exists() or os.path.islink(path):
        return _local(text, path, option=option)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", text) and not text.startswith((".", "~")):
        return DataSpec(text, "hub", text, None, text)
    if "/" in text or os.sep in text or text.endswith(".parquet"):
        raise FileNotFoundError(f"{option} {text}: no such file or folder (and not a Hugging Face dataset id "
                                f"OWNER/NAME)")
    raise UnknownNameError(f"unknown dataset {text!r}: use one of {', '.join(KNOWN_DATASETS)}, hf:OWNER/NAME, "
                           f"OWNER/NAME, or a folder or parquet file")


def _local(spec: str, path: Path, *, option: str, layout: str | None = None, known: KnownDataset | None = None,
           hub_id: str | None = None) -> DataSpec:
    path = path.expanduser().resolve()
    if path.is_file():
        if path.suffix.lower() != ".parquet" or layout not in (None, "parquet"):
            raise DatasetSpecError(f"{option} {path}: a dataset file must be a .parquet file (Image and label "
                                   f"columns); other layouts are folders")
        return DataSpec(spec, "parquet", str(path), known, hub_id)
    if not path.is_dir():
        what = "no such data folder" if option == "--data-dir" else "no such file or folder"
        raise FileNotFoundError(f"{option} {path}: {what}" + (f" for {spec}" if option == "--data-dir" else ""))
    found = layout or detect_layout(path)
    if found is None:
        raise DatasetSpecError(
            f"{option} {path}: not a dataset folder: neither a parquet dataset (SPLIT.parquet or "
            f"SPLIT-00000-of-00002.parquet files), a CUB_200_2011 folder, nor an image folder "
            f"(CLASS/IMAGE files, optionally under train/ and test/)")
    if found == "cub":
        root = _cub_root(path)
        if root is None:
            raise FileNotFoundError(f"{option} {path}: no images.txt; a CUB_200_2011 folder needs "
                                    f"{', '.join(CUB_FILES)}")
        path = root
    return DataSpec(spec, found, str(path), known, hub_id)  # type: ignore[arg-type]


def detect_layout(folder: Path) -> Layout | None:
    """The layout of a local dataset folder, or None when it has none of them."""
    if _cub_root(folder) is not None:
        return "cub"
    if _parquet_files(folder):
        return "parquet"
    if any(child.is_dir() and not child.name.startswith(".") for child in folder.iterdir()):
        return "imagefolder"
    return None


# --- splits ---------------------------------------------------------------------------------------

@dataclass
class Splits:
    """The splits read from a dataset: sources by split name, every split it has, the class names."""

    data: DataSpec
    sources: dict[str, ImageSource]
    available: list[str]
    label_names: list[str] | None


def split_names(data: DataSpec, *, cache_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Every split the data has, by name, without reading images (a Hub dataset asks the Hub)."""
    if data.layout == "parquet":
        return sorted(_parquet_splits(Path(data.location)))
    if data.layout == "cub":
        return ["train", "test"]
    if data.layout == "imagefolder":
        return sorted(_imagefolder_splits(Path(data.location)))
    import datasets

    return _from_hub(data, lambda: list(datasets.get_dataset_split_names(data.location, cache_dir=_cache(cache_dir))))


def find_split(available: Iterable[str], wanted: str) -> str | None:
    """The split of `available` that `wanted` names: itself, or a validation split by another name."""
    available = list(available)
    if wanted in available:
        return wanted
    if wanted in _VALIDATION:
        return next((name for name in available if name in _VALIDATION), None)
    return None


def open_splits(data: DataSpec, wanted: Iterable[str] | None = None, *, image_column: str | None = None,
                label_column: str | None = None, cache_dir: str | os.PathLike[str] | None = None,
                streaming: bool = False) -> Splits:
    """The data's splits named in `wanted` (all by default) as image sources; a missing name is left out.

    Columns default to the known row's, else the first Image and ClassLabel features. Labels of
    a folder layout (CUB, imagefolder) index the train split's classes. `cache_dir` is the
    `datasets` cache (its default when None). `streaming` reads a Hub dataset row by row
    (`datasets` streaming): the sources are then `IterableSource`s, with no length.
    """
    if data.layout == "cub":
        return _open_cub(data, wanted)
    if data.layout == "parquet":  # a cell's relative path is relative to the dataset's folder
        location = Path(data.location)
        root = str(location if location.is_dir() else location.parent)
    else:  # the Hub: paths point into the datasets cache, where archives are extracted
        import datasets

        root = os.fspath(cache_dir) if cache_dir is not None else str(datasets.config.HF_DATASETS_CACHE)
    cells = {"root": root, "allow_outside_paths": data.outside_paths}
    if data.layout == "imagefolder":
        return _open_imagefolder(data, wanted)
    tables, available = (_parquet_tables(data, wanted, cache_dir, streaming) if data.layout == "parquet"
                         else _hub_tables(data, wanted, cache_dir, streaming))
    if streaming:
        from equimod_zoo.data.streams import IterableSource

        sources = {name: IterableSource(table, *_columns(data, table, image_column, label_column), name=name,
                                        num_rows=_parquet_rows(data, name) if data.layout == "parquet" else None,
                                        **cells)
                   for name, table in tables.items()}
    else:
        sources = {}
        for name, table in tables.items():
            try:
                sources[name] = HFDatasetSource(table, *_columns(data, table, image_column, label_column), name=name,
                                                **cells)
            except (KeyError, ValueError) as error:
                message = error.args[0] if isinstance(error, KeyError) else str(error)
                raise type(error)(f"{data.name} split {name!r}: {message}") from None
    names = {name: s.label_names for name, s in sources.items()}
    distinct = {tuple(n) if n is not None else None for n in names.values()}
    if len(distinct) > 1:
        raise UserError(f"{data.name}: the splits name their classes differently "
                        f"({', '.join(f'{name}: {len(n or [])} names' for name, n in names.items())})")
    return Splits(data, sources, available, next(iter(names.values()), None))


def _columns(data: DataSpec, table: Any, image_column: str | None,
             label_column: str | None) -> tuple[str | None, str | None]:
    """The columns given, else the known row's where the table has them, else None (detected)."""
    features = table.features or {}
    if data.known is not None:
        known = data.known
        image_column = image_column or (known.image_column if known.image_column in features else None)
        label_column = label_column or (known.label_column if known.label_column in features else None)
    return image_column, label_column


def open_split(data: DataSpec | str, split: str | None = None, *, image_column: str | None = None,
               label_column: str | None = None, cache_dir: str | os.PathLike[str] | None = None,
               streaming: bool = False, prefer: str | None = None) -> ImageSource:
    """One split of `data` (a DataSpec or a spec string) as an image source.

    `split` None takes the only split, or `prefer` when the data has several and one is called
    so; otherwise it is an error that lists the splits.
    """
    if not isinstance(data, DataSpec):
        data = resolve_spec(data)
    options = dict(image_column=image_column, label_column=label_column, cache_dir=cache_dir, streaming=streaming)
    if data.layout == "hub" and split is not None:  # ask for the split itself, not the Hub for a listing
        opened = open_splits(data, [split], **options)
        if not opened.sources:
            raise UserError(f"{data.spec}: no split {split!r}; it has {opened.available}")
        return next(iter(opened.sources.values()))
    chosen = choose_split(data, split, prefer=prefer, cache_dir=cache_dir)
    return open_splits(data, [chosen], **options).sources[chosen]


def choose_split(data: DataSpec, split: str | None, *, prefer: str | None = None,
                 cache_dir: str | os.PathLike[str] | None = None) -> str:
    """The name of the split `split` means in `data` (see `open_split`), or an error listing the splits."""
    available = split_names(data, cache_dir=cache_dir)
    if split is None:
        if len(available) == 1:
            return available[0]
        if prefer is not None and find_split(available, prefer) is not None:
            return find_split(available, prefer)
        raise UserError(f"{data.spec}: has splits {available}; choose one with --split")
    chosen = find_split(available, split)
    if chosen is None:
        raise UserError(f"{data.spec}: no split {split!r}; it has {available}")
    return chosen


def _cache(cache_dir: str | os.PathLike[str] | None) -> str | None:
    return os.fspath(cache_dir) if cache_dir is not None else None


# --- parquet and the Hub --------------------------------------------------------------------------

def _parquet_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.parquet"))


def _parquet_splits(location: Path) -> dict[str, list[str]]:
    """Split name -> parquet files. A single file is one split, named after the file."""
    if location.is_file():
        stem = location.stem
        match = _PARQUET_SPLIT.fullmatch(stem)
        return {match.group(1) if match else "train": [str(location)]}
    files: dict[str, list[str]] = {}
    for path in _parquet_files(location):
        match = _PARQUET_SPLIT.fullmatch(path.stem)
        if match:
            files.setdefault(match.group(1), []).append(str(path))
    return files


def parquet_files(data: DataSpec, split: str) -> list[Path]:
    """The parquet files of one split of a parquet dataset, in order."""
    return [Path(f) for f in _parquet_splits(Path(data.location)).get(split, [])]


def _parquet_rows(data: DataSpec, split: str) -> int:
    """Rows of one split, from the parquet files' footers (nothing else is read)."""
    return sum(parquet_footer(path).num_rows for path in parquet_files(data, split))


def parquet_footer(path: str | os.PathLike[str]) -> Any:
    """A parquet file's footer (pyarrow's FileMetaData), or one line saying the file is not a readable parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_metadata(path)
    except (pa.ArrowException, OSError) as error:
        raise UserError(f"{path}: not a readable parquet file ({' '.join(str(error).split())}); it is damaged, "
                        f"cut short or not parquet") from None


def _parquet_tables(data: DataSpec, wanted: Iterable[str] | None, cache_dir: Any,
                    streaming: bool) -> tuple[dict[str, Any], list[str]]:
    import datasets

    files = _parquet_splits(Path(data.location))
    available = sorted(files)
    chosen = _chosen(available, wanted)
    tables = {}
    for name in chosen:
        for path in files[name]:  # its footer first: a garbage file is one line, not a traceback from datasets
            parquet_footer(path)
        try:
            tables[name] = datasets.load_dataset("parquet", data_files={name: files[name]}, split=name,
                                                 cache_dir=_cache(cache_dir), streaming=streaming)
        except datasets.exceptions.DatasetGenerationError as error:  # damaged pages behind a sound footer
            cause = error.__cause__ or error
            raise UserError(f"{', '.join(files[name])}: could not be read ({type(cause).__name__}: "
                            f"{' '.join(str(cause).split())}); the parquet data is damaged") from None
    return tables, available


def _hub_tables(data: DataSpec, wanted: Iterable[str] | None, cache_dir: Any,
                streaming: bool) -> tuple[dict[str, Any], list[str]]:
    import datasets

    options = {"cache_dir": _cache(cache_dir), "streaming": streaming}
    if wanted is None:
        loaded = _from_hub(data, lambda: datasets.load_dataset(data.location, **options))
        return {name: loaded[name] for name in loaded}, list(loaded)
    # one split at a time, so asking for ImageNet's validation split never downloads its train split
    tables, missing = {}, []
    for name in dict.fromkeys(wanted):
        try:
            tables[name] = _from_hub(data, lambda: datasets.load_dataset(data.location, split=name, **options))
        except ValueError as error:
            if "split" not in str(error).lower():
                raise
            missing.append(name)
    if not missing:
        return tables, sorted(tables)
    available = _from_hub(data, lambda: list(datasets.get_dataset_split_names(data.location, cache_dir=_cache(cache_dir))))
    for name in missing:
        found = find_split(available, name)
        if found is not None and found not in tables:
            tables[found] = _from_hub(data, lambda: datasets.load_dataset(data.location, split=found, **options))
    return tables, available


def _from_hub(data: DataSpec, load: Any) -> Any:
    """`load()`, with a failure to reach the Hub (or a missing dataset) as one line that says what to do."""
    try:
        return load()
    except (ConnectionError, TimeoutError, FileNotFoundError, OSError) as error:
        reason = " ".join(str(error).split())[:300] or type(error).__name__
        raise DataUnavailableError(
            f"{data.location}: could not load this Hugging Face dataset ({reason}); with no network, give a local "
            f"copy with --data-dir DIR (parquet files, a CUB_200_2011 folder or train/ test/ image folders)"
            if data.spec != data.location else
            f"{data.location}: could not load this Hugging Face dataset ({reason}); download it first, or give a "
            f"local folder or parquet file instead") from None


def _chosen(available: list[str], wanted: Iterable[str] | None) -> list[str]:
    if wanted is None:
        return list(available)
    found = (find_split(available, name) for name in wanted)
    return list(dict.fromkeys(name for name in found if name is not None))


# --- CUB_200_2011 ---------------------------------------------------------------------------------

def _cub_root(folder: Path) -> Path | None:
    for candidate in (folder, folder / "CUB_200_2011"):
        if (candidate / "images.txt").is_file():
            return candidate
    return None


def _open_cub(data: DataSpec, wanted: Iterable[str] | None) -> Splits:
    root = Path(data.location)
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
                raise UserError(f"{root / name}: no row for image {image_id} ({relative})")
        class_id = tables["image_class_labels.txt"][image_id]
        if class_id not in class_index:
            raise UserError(f"{root / 'image_class_labels.txt'}: image {image_id} has class {class_id}, "
                            f"which classes.txt does not list")
        role = {"1": "train", "0": "test"}.get(tables["train_test_split.txt"][image_id])
        if role is None:
            raise UserError(f"{root / 'train_test_split.txt'}: image {image_id} is neither 1 (train) nor 0 (test)")
        path = os.path.normpath(root / "images" / relative)
        if not data.outside_paths and not path.startswith(os.path.join(os.path.normpath(root / "images"), "")):
            raise UserError(f"{root / 'images.txt'}: image {image_id} is {relative!r}, outside {root / 'images'}; "
                            f"refused (pass --allow-outside-paths to read files elsewhere)")
        paths[role].append(path)
        labels[role].append(class_index[class_id])
    chosen = _chosen(["train", "test"], wanted)
    return Splits(data, {role: FileListSource(paths[role], labels[role], names) for role in chosen},
                  ["test", "train"], names)


def _id_table(path: Path) -> dict[str, str]:
    """`ID VALUE` lines (the value may hold spaces) as a dict."""
    rows = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            parts = line.strip().split(maxsplit=1)
            if len(parts) != 2:
                raise UserError(f"{path}:{number}: expected 'ID VALUE', got {line!r}")
            rows[parts[0]] = parts[1]
    return rows


# --- imagefolder ----------------------------------------------------------------------------------

def _imagefolder_splits(root: Path) -> dict[str, Path]:
    """Split name -> folder: train/ val/ test/ ... when there, else the whole tree as "train"."""
    folders = {name: root / name for name in SPLIT_FOLDERS if (root / name).is_dir()}
    return folders or {"train": root}


def _open_imagefolder(data: DataSpec, wanted: Iterable[str] | None) -> Splits:
    root = Path(data.location)
    folders = _imagefolder_splits(root)
    available = sorted(folders)
    chosen = _chosen(available, wanted)
    found = {name: _class_images(folders[name]) for name in dict.fromkeys([*chosen, *(
        ["train"] if "train" in folders else [])])}
    reference = "train" if "train" in found else chosen[0] if chosen else None
    names = sorted({cls for cls, _ in found[reference]}) if reference else []
    if reference and not names:
        raise UserError(f"{folders[reference]}: no images in class sub-folders")
    index = {name: i for i, name in enumerate(names)}
    sources: dict[str, ImageSource] = {}
    for split in chosen:
        items = found[split]
        unknown = sorted({cls for cls, _ in items} - set(index))
        if unknown:
            raise UserError(f"{data.name} split {folders[split].name!r}: class folder {unknown[0]!r} has no images "
                            f"in {folders[reference]}")
        sources[split] = FileListSource([p for _, p in items], [index[c] for c, _ in items], names)
    return Splits(data, sources, available, names)


def _class_images(root: Path) -> list[tuple[str, Path]]:
    paths = scan_images(root)
    absolute = Path(os.path.abspath(root))
    items = []
    for path in paths:
        parts = path.relative_to(absolute).parts
        if len(parts) < 2:
            raise UserError(f"{root}: {parts[0]} sits outside any class folder")
        items.append((parts[0], path))
    return items
