"""Image sources: a list of images that can be counted, named, opened and labelled by index.

Training, extraction, probes and transfer all read images through one small protocol, so a
folder of files, a list of files, a class-per-folder tree and a Hugging Face dataset look the
same to them:

    source = folder_source("photos/")                     # every image file below a folder
    source = imagefolder_source("flowers/train")          # class sub-folders give the labels
    source = open_split("data/flowers102", split="test")   # any dataset spec (equimod_zoo.data)
    len(source), source.key(0), source.open(0), source.label(0), source.label_names

`open` returns the raw `PIL.Image` as stored (lazy, any mode) and may raise for a bad file;
`equimod_zoo.data.images.load_rgb` turns it into a checked RGB image. A path that is not a
regular file (a FIFO, a device, a folder named like an image) raises without being opened, so
nothing blocks on it. A dataset's image cell that holds a path instead of bytes is opened only
inside the dataset's own folder (`open_image_cell`): a row never reads another file of the machine
unless the user allows it (`--allow-outside-paths`). Keys are valid UTF-8: a file name that is not shows its undecodable
bytes as `\\xNN` escapes in outputs, and still opens.
"""
from __future__ import annotations

import io
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from PIL import Image

from equimod_zoo.data.images import IMAGE_EXTENSIONS
from equimod_zoo.errors import LimitExceededError, UnknownNameError, UserError
from equimod_zoo.limits import MAX_CLASSES


@runtime_checkable
class ImageSource(Protocol):
    """Images addressed by position 0..len-1."""

    label_names: list[str] | None

    def __len__(self) -> int: ...

    def key(self, i: int) -> str:
        """What identifies image `i` in outputs: a file path, or `split/index` for a dataset row."""
        ...

    def open(self, i: int) -> Image.Image:
        """The raw image, not yet converted; raises for a file that is missing or not an image."""
        ...

    def label(self, i: int) -> int | None:
        """The class index of image `i`, or None when the source has no labels."""
        ...


class FileListSource:
    """Image files given as a list of paths, with optional class indices and names."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]], labels: Sequence[int] | None = None,
                 label_names: Sequence[str] | None = None) -> None:
        self.paths = [str(p) for p in paths]
        if labels is not None and len(labels) != len(self.paths):
            raise UserError(f"labels: {len(labels)} labels for {len(self.paths)} paths")
        self.labels = None if labels is None else [int(x) for x in labels]
        self.label_names = None if label_names is None else list(label_names)

    def __len__(self) -> int:
        return len(self.paths)

    def key(self, i: int) -> str:
        return printable_path(self.paths[i])

    def open(self, i: int) -> Image.Image:
        return open_image_file(self.paths[i])

    def label(self, i: int) -> int | None:
        return None if self.labels is None else self.labels[i]

    def __repr__(self) -> str:
        return f"FileListSource({len(self)} files)"


class MappedSource:
    """Another source's images at new positions: `_index(i)` is the position in `source` of image `i`."""

    def __init__(self, source: ImageSource) -> None:
        self.source = source
        self.label_names = source.label_names

    def _index(self, i: int) -> int:
        raise NotImplementedError

    def key(self, i: int) -> str:
        return self.source.key(self._index(i))

    def open(self, i: int) -> Image.Image:
        return self.source.open(self._index(i))

    def label(self, i: int) -> int | None:
        return self.source.label(self._index(i))


class FirstImages(MappedSource):
    """The first `limit` images of another source (`--limit N`: a quick look)."""

    def __init__(self, source: ImageSource, limit: int) -> None:
        if limit < 1:
            raise UserError(f"--limit must be at least 1, got {limit}")
        super().__init__(source)
        self.count = min(limit, len(source))

    def __len__(self) -> int:
        return self.count

    def _index(self, i: int) -> int:
        if not 0 <= i < self.count:
            raise IndexError(f"image {i} of {self.count}")
        return i

    def __repr__(self) -> str:
        return f"FirstImages({self.source!r}, {self.count})"


class SubsetSource(MappedSource):
    """Some images of another source, by index, in the order given."""

    def __init__(self, source: ImageSource, indices: Sequence[int]) -> None:
        super().__init__(source)
        self.indices = [int(i) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def _index(self, i: int) -> int:
        return self.indices[i]

    def __repr__(self) -> str:
        return f"SubsetSource({self.source!r}, {len(self)} images)"


def evenly_spaced(source: ImageSource, count: int) -> ImageSource:
    """At most `count` images spread evenly over `source` (a split sorted by class keeps its classes)."""
    if count < 1:
        raise UserError(f"--limit must be at least 1, got {count}")
    if count >= len(source):
        return source
    return SubsetSource(source, [i * len(source) // count for i in range(count)])


def printable_path(path: str) -> str:
    """`path` as valid UTF-8: bytes of a file name that do not decode appear as `\\xNN` escapes."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:  # os.fsdecode's surrogate escapes of undecodable bytes
        return os.fsencode(path).decode("utf-8", "backslashreplace")


def open_image_file(path: str | os.PathLike[str]) -> Image.Image:
    """`Image.open` of a regular file; anything else (FIFO, device, socket, folder) raises unopened."""
    mode = os.stat(path).st_mode  # follows links; a dangling one raises FileNotFoundError
    if not stat.S_ISREG(mode):
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "a folder" if stat.S_ISDIR(mode) else "not a file")
        raise UserError(f"not a regular file ({kind}); not opened")
    return Image.open(path)


def open_image_cell(cell: Any, *, root: str | os.PathLike[str] | None, allow_outside: bool = False) -> Image.Image:
    """A Hugging Face Image cell, `{"bytes": ..., "path": ...}`, as an image: its bytes, else its file.

    A relative path resolves inside `root`, the dataset's own folder; a path that leaves it (an
    absolute one elsewhere, `..`, a link out) raises unopened, unless `allow_outside`.
    """
    if cell is None:
        raise UserError("empty image cell")
    if not isinstance(cell, dict):
        raise UserError(f"image cell holds {type(cell).__name__}, not {{bytes, path}}")
    if cell.get("bytes") is not None:
        return Image.open(io.BytesIO(cell["bytes"]))
    path = cell.get("path")
    if not path:
        raise UserError("image cell has neither bytes nor a path")
    return open_image_file(_inside(str(path), root, allow_outside))


def _inside(path: str, root: str | os.PathLike[str] | None, allow_outside: bool) -> str:
    located = path if os.path.isabs(path) or root is None else os.path.join(root, path)
    if allow_outside:
        return located
    if root is not None:
        real, real_root = os.path.realpath(located), os.path.realpath(root)
        if real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep):
            return real
    where = f"outside the dataset's folder {root}" if root is not None else "a path, and this dataset has no folder"
    raise UserError(f"image cell path {printable_path(path)!r} is {where}; not opened (pass --allow-outside-paths "
                    f"to read files elsewhere)")


def scan_images(root: str | os.PathLike[str]) -> list[Path]:
    """Every image file below `root`, by extension, following symbolic links, in sorted order.

    Dangling links with an image extension are kept, so they are reported as failures rather
    than silently skipped. Paths are absolute, so outputs do not depend on the working folder.
    """
    root = Path(os.path.abspath(os.path.expanduser(root)))
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such folder")
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a folder of images")
    found: list[Path] = []
    seen: set[str] = set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link cycle, or a folder reached twice through links
            subfolders.clear()
            continue
        seen.add(real)
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        found.extend(Path(folder) / f for f in files
                     if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS)
    # Sort on path components so "a/b.jpg" and "a.b/c.jpg" order the same on every filesystem.
    return sorted(found, key=lambda p: p.relative_to(root).parts)


def folder_source(root: str | os.PathLike[str]) -> FileListSource:
    """Every image file below `root` (recursive, sorted), without labels."""
    return FileListSource(scan_images(root))


def imagefolder_source(root: str | os.PathLike[str]) -> FileListSource:
    """A class-per-folder tree (`root/CLASS/.../image.jpg`): the sorted folder names are the labels."""
    root = Path(root)
    paths = scan_images(root)
    absolute_root = Path(os.path.abspath(os.path.expanduser(root)))
    nested = [p for p in paths if len(p.relative_to(absolute_root).parts) > 1]
    if len(nested) != len(paths):
        loose = next(p for p in paths if len(p.relative_to(absolute_root).parts) == 1)
        raise UserError(f"{root}: not an imagefolder tree: {loose.name} sits outside any class folder")
    if not nested:
        raise UserError(f"{root}: no images in class sub-folders")
    class_of = [p.relative_to(absolute_root).parts[0] for p in nested]
    names = sorted(set(class_of))
    index = {name: i for i, name in enumerate(names)}
    return FileListSource(nested, [index[c] for c in class_of], names)


class HFDatasetSource:
    """A Hugging Face `datasets.Dataset` with an image column and, optionally, a label column.

    The image column defaults to the first `Image` feature, the label column to the first
    `ClassLabel` feature. Images are read undecoded, so a corrupt row fails in our loader, one
    image at a time, instead of inside `datasets`. A cell that holds a path is read inside
    `root`, the dataset's folder (see `open_image_cell`).
    """

    def __init__(self, hf_dataset: Any, image_column: str | None = None, label_column: str | None = None,
                 *, name: str | None = None, root: str | os.PathLike[str] | None = None,
                 allow_outside_paths: bool = False) -> None:
        import datasets

        self.root, self.allow_outside_paths = root, allow_outside_paths
        features = hf_dataset.features
        self.image_column = image_column or _first_feature(features, datasets.Image)
        if self.image_column is None:
            raise UserError(f"dataset has no Image column among {list(features)}; pass image_column=")
        _check_column(features, self.image_column, "image column")
        if not isinstance(features[self.image_column], datasets.Image):
            raise UserError(f"image column {self.image_column!r} is {type(features[self.image_column]).__name__}, "
                            f"not an Image feature")
        self.label_column = label_column or _first_feature(features, datasets.ClassLabel)
        self.split = name or (str(hf_dataset.split) if hf_dataset.split is not None else "data")
        self.label_names: list[str] | None = None
        self.labels: list[int] | None = None
        if self.label_column is not None:
            _check_column(features, self.label_column, "label column")
            self.labels, self.label_names = _labels(hf_dataset, self.label_column)
        self.dataset = hf_dataset.select_columns([self.image_column]).cast_column(
            self.image_column, datasets.Image(decode=False))

    def __len__(self) -> int:
        return len(self.dataset)

    def key(self, i: int) -> str:
        return f"{self.split}/{i}"

    def open(self, i: int) -> Image.Image:
        return open_image_cell(self.dataset[i][self.image_column], root=self.root,
                               allow_outside=self.allow_outside_paths)

    def label(self, i: int) -> int | None:
        return None if self.labels is None else self.labels[i]

    def __repr__(self) -> str:
        return f"HFDatasetSource({self.split!r}, {len(self)} rows, image={self.image_column!r}, label={self.label_column!r})"


def _first_feature(features: Any, kind: type) -> str | None:
    return next((name for name, feature in features.items() if isinstance(feature, kind)), None)


def _check_column(features: Any, column: str, what: str) -> None:
    if column not in features:
        raise UnknownNameError(f"{what} {column!r} is not in the dataset; its columns are {list(features)}")


def _labels(hf_dataset: Any, column: str) -> tuple[list[int], list[str] | None]:
    import datasets

    feature = hf_dataset.features[column]
    values = list(hf_dataset.select_columns([column])[column])
    empty = next((i for i, v in enumerate(values) if v is None), None)
    if empty is not None:
        raise UserError(f"label column {column!r}: row {empty} has no label (null); label it, drop the row, or "
                        f"give --label-column of another column")
    names: list[str] | None
    if isinstance(feature, datasets.ClassLabel):
        labels, names = [int(v) for v in values], list(feature.names)
    elif all(isinstance(v, str) for v in values):  # string labels: number them in sorted order
        names = sorted(set(values))
        index = {name: i for i, name in enumerate(names)}
        labels = [index[v] for v in values]
    else:
        try:
            labels, names = [int(v) for v in values], None
        except (TypeError, ValueError):
            raise UserError(f"label column {column!r} holds {feature}, not class indices or names") from None
    check_class_indices(labels, names, where=f"label column {column!r}")
    return labels, names


def check_class_indices(labels: Sequence[int], names: Sequence[str] | None, *, where: str, first_row: int = 0) -> None:
    """Labels index the class names, or fewer than MAX_CLASSES classes: a probe allocates a row per class."""
    limit = len(names) if names is not None else MAX_CLASSES
    bad = next((i for i, label in enumerate(labels) if not 0 <= label < limit), None)
    if bad is not None:
        within = f"the {limit} class names" if names is not None else f"the limit of {MAX_CLASSES:,} classes " \
                                                                       f"(equimod_zoo.limits)"
        what = "below 0" if labels[bad] < 0 else f"not a class index within {within}"
        raise LimitExceededError(f"{where}: row {first_row + bad} has label {labels[bad]:,}, {what}")
