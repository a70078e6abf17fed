"""Image streams: inputs read in order, chunk by chunk, never listed whole in memory.

A stream gives consecutive chunks of at most `size` images, each an ordinary indexable
`ImageSource`, so a consumer holds one chunk at a time (extraction: one shard). Streams are

    FileListStream("list.txt")            one path a line (relative to the list's folder; `#` comments)
    TarShardStream("shards/{00000..00009}.tar")   webdataset tar shards: each sample's image member,
                                          keyed by the sample's key (`__key__`: the member's path up
                                          to the first dot of its name), read by offset, never unpacked
    IterableSource(hf_iterable_dataset)   a Hugging Face dataset in streaming mode (parquet or Hub)
    SourceStream(source)                  any indexable source, in chunks
    ConcatStream([...])                   several of these, one after the other

`image_inputs(values)` turns `--images` values (folders, image files, list files, tar shard
patterns) into one source (when everything can be listed cheaply) or one stream.
"""
from __future__ import annotations

import io
import itertools
import os
import re
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from PIL import Image

from equimod_zoo.data.images import IMAGE_EXTENSIONS
from equimod_zoo.data.sources import (FileListSource, FirstImages, ImageSource, MappedSource, check_class_indices,
                                      open_image_cell, printable_path, scan_images)
from equimod_zoo.errors import UnknownNameError, UserError
from equimod_zoo.limits import MAX_SHARDS, MAX_TAR_MEMBER_BYTES, check_limit

LIST_SUFFIXES = (".txt", ".lst", ".list")


@runtime_checkable
class ImageStream(Protocol):
    """Images in order, in chunks; `labelled` says whether they carry class labels."""

    label_names: list[str] | None
    labelled: bool

    def count(self) -> int:
        """How many images there are, found without reading them (list lines, tar headers, row counts)."""
        ...

    def chunks(self, size: int) -> Iterator[ImageSource]:
        """Consecutive pieces of at most `size` images (only the last may be shorter)."""
        ...


def _batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    if size < 1:
        raise UserError(f"chunk size must be >= 1, got {size}")
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


class SourceStream:
    """An indexable source, served in chunks."""

    def __init__(self, source: ImageSource) -> None:
        self.source = source
        self.label_names = source.label_names
        self.labelled = len(source) > 0 and source.label(0) is not None

    def count(self) -> int:
        return len(self.source)

    def chunks(self, size: int) -> Iterator[ImageSource]:
        for start in range(0, len(self.source), size):
            yield _Slice(self.source, start, min(start + size, len(self.source)))

    def __repr__(self) -> str:
        return f"SourceStream({self.source!r})"


class _Slice(MappedSource):
    def __init__(self, source: ImageSource, start: int, stop: int) -> None:
        super().__init__(source)
        self.start, self.stop = start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def _index(self, i: int) -> int:
        return self.start + i


class ReadStream:
    """A stream whose items are read in order by `items()`: counted by reading them, chunked by `chunk_of`."""

    label_names: list[str] | None = None
    labelled = False

    def items(self) -> Iterator[Any]:
        raise NotImplementedError

    def chunk_of(self, items: list[Any]) -> ImageSource:
        raise NotImplementedError

    def count(self) -> int:
        return sum(1 for _ in self.items())

    def chunks(self, size: int) -> Iterator[ImageSource]:
        for items in _batched(self.items(), size):
            yield self.chunk_of(items)


class FileListStream(ReadStream):
    """Image paths from a list file, one a line, read as the chunks are needed."""

    def __init__(self, list_file: str | os.PathLike[str]) -> None:
        self.list_file = Path(os.path.abspath(os.path.expanduser(list_file)))
        if not self.list_file.is_file():
            raise FileNotFoundError(f"{self.list_file}: no such list file")

    def items(self) -> Iterator[str]:
        """The listed paths, absolute."""
        folder = os.fsencode(self.list_file.parent)
        with open(self.list_file, "rb") as handle:  # bytes: a listed name need not be UTF-8
            for line in handle:
                line = line.rstrip(b"\r\n")
                if not line.strip() or line.lstrip().startswith(b"#"):
                    continue
                path = line if os.path.isabs(line) else os.path.join(folder, line)
                yield os.fsdecode(os.path.normpath(path))

    def chunk_of(self, items: list[str]) -> ImageSource:
        return FileListSource(items)

    def __repr__(self) -> str:
        return f"FileListStream({str(self.list_file)!r})"


# --- webdataset tar shards ------------------------------------------------------------------------

def expand_braces(pattern: str) -> list[str]:
    """`shards/{00000..00002}.tar` -> shards/00000.tar, shards/00001.tar, shards/00002.tar (bash's brace
    expansion: numeric ranges keep their zero padding; `{a,b}` lists; several groups multiply).

    The names are counted before any is made (groups multiply), and made one at a time: more than
    MAX_SHARDS is refused either way, so `{0..999999999}` costs neither memory nor time.
    """
    count = 1
    for body in re.findall(r"\{([^{}]*)\}", pattern):
        numeric = re.fullmatch(r"(-?\d+)\.\.(-?\d+)", body)
        count *= abs(int(numeric.group(2)) - int(numeric.group(1))) + 1 if numeric else body.count(",") + 1
    check_limit(f"{pattern}: the shard names it expands to", count, MAX_SHARDS)
    names = list(itertools.islice(_expand(pattern), MAX_SHARDS + 1))  # nested groups count only once expanded
    check_limit(f"{pattern}: the shard names it expands to (at least)", len(names), MAX_SHARDS)
    return names


def _expand(pattern: str) -> Iterator[str]:
    match = re.search(r"\{([^{}]*)\}", pattern)
    if match is None:
        yield pattern
        return
    body = match.group(1)
    numeric = re.fullmatch(r"(-?\d+)\.\.(-?\d+)", body)
    if numeric:
        first, last = numeric.groups()
        width = len(first) if first.lstrip("-").startswith("0") or len(first) == len(last) else 0
        step = 1 if int(last) >= int(first) else -1
        options: Iterable[str] = (str(n).zfill(width) for n in range(int(first), int(last) + step, step))
    elif "," in body:
        options = body.split(",")
    else:  # not a brace expression ({x}): kept as written
        yield from (pattern[:match.end()] + rest for rest in _expand(pattern[match.end():]))
        return
    head, tail = pattern[:match.start()], pattern[match.end():]
    for option in options:
        yield from _expand(head + option + tail)


def is_tar_pattern(value: str) -> bool:
    return value.endswith(".tar") or (value.endswith(".tar}") and "{" in value)


class TarShardStream(ReadStream):
    """webdataset shards: every sample's image, keyed by the sample's key, read from the tar by offset.

    Members are grouped into samples as webdataset does: consecutive members sharing a key (the
    member's path up to the first dot of its name). A sample's image is its member with an image
    extension; a sample without one, or whose image is not a regular file, is kept as a row that
    fails, so it is listed rather than lost. So is a shard's unreadable rest: a damaged header
    ends what tarfile can read, and the bytes after it (unless they are the zeros that end an
    archive) become one failing row `SHARD@BYTE`. Tar headers are read as the chunks are needed,
    and forgotten after (a shard of a million samples costs no more memory than one chunk).
    """

    def __init__(self, pattern: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> None:
        patterns = [os.fspath(pattern)] if isinstance(pattern, (str, os.PathLike)) else [os.fspath(p) for p in pattern]
        self.patterns = patterns
        self.shards = [Path(os.path.abspath(os.path.expanduser(p))) for pat in patterns for p in expand_braces(pat)]
        if not self.shards:
            raise UserError(f"{patterns}: no tar shards")
        missing = [p for p in self.shards if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{missing[0]}: no such tar shard"
                                    + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))

    def items(self) -> Iterator[tuple[str, str, int, int, str | None]]:
        """(key, shard, data offset, size, error) of each sample's image, in shard order."""
        for shard in self.shards:
            try:
                tar = tarfile.open(shard, mode="r:")  # uncompressed: members are read back by offset
            except tarfile.TarError as error:
                raise UserError(f"{shard}: not an uncompressed tar file ({error})") from None
            with tar:
                key, image, kinds = None, None, []
                damage: str | None = None
                while True:
                    try:
                        member = tar.next()
                    except Exception as error:  # tarfile's errors on a damaged member are as varied as the damage
                        damage = f"{type(error).__name__}: {error}"
                        break
                    tar.members = []  # forget headers already read: memory stays flat
                    if member is None:  # the end of the archive, or a header tarfile could not read
                        damage = _unread_rest(shard, tar.offset)
                        break
                    if member.isdir():
                        continue
                    member_key, suffix = _split_key(member.name)
                    if member_key != key:
                        if key is not None:
                            yield _sample(key, str(shard), image, kinds)
                        key, image, kinds = member_key, None, []
                    kinds.append(suffix)
                    if image is None and "." + suffix.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS:
                        image = member
                if key is not None:
                    yield _sample(key, str(shard), image, kinds)
                if damage is not None:
                    yield (f"{shard}@{tar.offset}", str(shard), 0, 0,
                           f"damaged from byte {tar.offset} of the shard on ({damage}); the samples after it could "
                           f"not be read")

    def chunk_of(self, items: list[tuple[str, str, int, int, str | None]]) -> ImageSource:
        return TarMembers(items)

    def __repr__(self) -> str:
        return f"TarShardStream({self.patterns!r}, {len(self.shards)} shards)"


def _unread_rest(shard: Path, offset: int) -> str | None:
    """Why the bytes of `shard` from `offset` on are not the zero blocks that end a tar (None when they are)."""
    with open(shard, "rb") as handle:
        handle.seek(offset)
        while chunk := handle.read(1 << 16):
            if chunk.strip(b"\0"):
                return f"a tar header tarfile could not read, and {shard.stat().st_size - offset} bytes after it"
    return None


def _split_key(name: str) -> tuple[str, str]:
    folder, _, base = name.rpartition("/")
    stem, _, suffix = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), suffix


def _sample(key: str, shard: str, member: tarfile.TarInfo | None,
            kinds: list[str]) -> tuple[str, str, int, int, str | None]:
    if member is None:
        return key, shard, 0, 0, f"no image member in the sample (it has {', '.join(kinds) or 'nothing'})"
    if not member.isreg():
        return key, shard, 0, 0, f"{member.name}: not a regular file in the tar; not opened"
    if member.size > MAX_TAR_MEMBER_BYTES:
        return key, shard, 0, 0, f"{member.name}: {member.size} bytes, over the limit of {MAX_TAR_MEMBER_BYTES}"
    return key, shard, member.offset_data, member.size, None


class TarMembers:
    """One chunk of tar samples: (key, shard, offset, size, error) rows, opened by reading the bytes."""

    def __init__(self, rows: Sequence[tuple[str, str, int, int, str | None]]) -> None:
        self.rows = list(rows)
        self.label_names = None

    def __len__(self) -> int:
        return len(self.rows)

    def key(self, i: int) -> str:
        return printable_path(self.rows[i][0])

    def open(self, i: int) -> Image.Image:
        _, shard, offset, size, error = self.rows[i]
        if error is not None:
            raise UserError(error)
        with open(shard, "rb") as handle:
            handle.seek(offset)
            data = handle.read(size)
        if len(data) != size:
            raise UserError(f"{shard}: truncated at this member ({len(data)} of {size} bytes)")
        return Image.open(io.BytesIO(data))

    def label(self, i: int) -> int | None:
        return None


# --- Hugging Face streaming -----------------------------------------------------------------------

class IterableSource:
    """A Hugging Face `IterableDataset` (streaming mode) as a stream: rows come as they are read.

    Keys are `split/index`, as for a loaded dataset. Labels need a `ClassLabel` or integer label
    column; a chunk keeps its rows' encoded bytes, not decoded pixels.
    """

    def __init__(self, iterable: Any, image_column: str | None = None, label_column: str | None = None, *,
                 name: str, num_rows: int | None = None, root: str | os.PathLike[str] | None = None,
                 allow_outside_paths: bool = False) -> None:
        import datasets

        self.root, self.allow_outside_paths = root, allow_outside_paths
        features = iterable.features
        if features is None:
            raise UserError(f"split {name!r}: the streamed dataset declares no features; load it without streaming")
        self.image_column = image_column or next(
            (n for n, f in features.items() if isinstance(f, datasets.Image)), None)
        if self.image_column is None or self.image_column not in features:
            raise UnknownNameError(f"image column {self.image_column!r} is not in the dataset; "
                                   f"its columns are {list(features)}")
        self.label_column = label_column or next(
            (n for n, f in features.items() if isinstance(f, datasets.ClassLabel)), None)
        if self.label_column is not None and self.label_column not in features:
            raise UnknownNameError(f"label column {self.label_column!r} is not in the dataset; "
                                   f"its columns are {list(features)}")
        label = features[self.label_column] if self.label_column else None
        if label is not None and not (isinstance(label, datasets.ClassLabel) or
                                      (isinstance(label, datasets.Value) and "int" in label.dtype)):
            raise UserError(f"label column {self.label_column!r} holds {label}; streaming needs class indices")
        self.label_names = list(label.names) if isinstance(label, datasets.ClassLabel) else None
        self.labelled = label is not None
        self.split = name
        splits = getattr(iterable.info, "splits", None) or {}
        self.num_rows = num_rows if num_rows is not None else (
            splits[name].num_examples if name in splits and splits[name].num_examples else None)
        columns = [c for c in (self.image_column, self.label_column) if c]
        self.dataset = iterable.select_columns(columns).cast_column(self.image_column, datasets.Image(decode=False))

    def count(self) -> int:
        if self.num_rows is None:  # counting would mean downloading every row
            raise UserError(f"split {self.split!r}: the streamed dataset does not say how many rows it has; "
                            f"load it without --streaming")
        return self.num_rows

    def chunks(self, size: int) -> Iterator[ImageSource]:
        import pyarrow as pa

        start = 0
        rows = iter(self.dataset)
        while True:
            try:
                chunk = list(itertools.islice(rows, size))
            except pa.ArrowException as error:  # a damaged file behind the stream: refused, not half-read
                reason = f"{type(error).__name__}: {' '.join(str(error).split())}"
                raise UserError(f"split {self.split!r}: the rows from row {start} on could not be read ({reason}); "
                                f"the data is damaged") from None
            if not chunk:
                return
            yield RowsSource(self.split, start, [row[self.image_column] for row in chunk],
                             [row[self.label_column] for row in chunk] if self.label_column else None,
                             self.label_names, root=self.root, allow_outside_paths=self.allow_outside_paths)
            start += len(chunk)

    def __repr__(self) -> str:
        return f"IterableSource({self.split!r}, image={self.image_column!r}, label={self.label_column!r})"


class RowsSource:
    """A chunk of undecoded image cells ({bytes, path}) with their labels."""

    def __init__(self, split: str, start: int, cells: list[Any], labels: list[Any] | None,
                 label_names: list[str] | None, *, root: str | os.PathLike[str] | None = None,
                 allow_outside_paths: bool = False) -> None:
        self.split, self.start, self.cells = split, start, cells
        self.root, self.allow_outside_paths = root, allow_outside_paths
        if labels is not None:
            empty = next((i for i, label in enumerate(labels) if label is None), None)
            if empty is not None:
                raise UserError(f"split {split!r}: row {start + empty} has no label (null); label it, or give "
                                f"--label-column of another column")
            labels = [int(label) for label in labels]
            check_class_indices(labels, label_names, where=f"split {split!r}", first_row=start)
        self.labels = labels
        self.label_names = label_names

    def __len__(self) -> int:
        return len(self.cells)

    def key(self, i: int) -> str:
        return f"{self.split}/{self.start + i}"

    def open(self, i: int) -> Image.Image:
        return open_image_cell(self.cells[i], root=self.root, allow_outside=self.allow_outside_paths)

    def label(self, i: int) -> int | None:
        return None if self.labels is None else self.labels[i]


class OffsetSource(MappedSource):
    """A chunk addressed by input position: image `start + i` of the whole input is the chunk's `i`.

    Its length is `start + len(chunk)`; positions before `start` are not in it.
    """

    def __init__(self, chunk: ImageSource, start: int) -> None:
        super().__init__(chunk)
        self.start = start
        chunk_paths = getattr(chunk, "paths", None)
        self.paths = _OffsetList(chunk_paths, start) if chunk_paths is not None else None

    def __len__(self) -> int:
        return self.start + len(self.source)

    def _index(self, i: int) -> int:
        if not self.start <= i < len(self):
            raise IndexError(f"image {i} is outside this chunk ({self.start}..{len(self) - 1})")
        return i - self.start

    def __repr__(self) -> str:
        return f"OffsetSource({self.source!r}, start={self.start})"


class _OffsetList:
    def __init__(self, items: Sequence[Any], start: int) -> None:
        self.items, self.start = items, start

    def __getitem__(self, i: int) -> Any:
        return self.items[i - self.start]


# --- several inputs, and a limit ------------------------------------------------------------------

class ConcatStream:
    """Several streams one after the other (chunks never straddle two of them)."""

    def __init__(self, streams: Sequence[ImageStream]) -> None:
        self.streams = list(streams)
        names = {tuple(s.label_names) if s.label_names is not None else None for s in self.streams}
        self.label_names = self.streams[0].label_names if len(names) == 1 else None
        self.labelled = all(s.labelled for s in self.streams) and len(names) == 1

    def count(self) -> int:
        return sum(s.count() for s in self.streams)

    def chunks(self, size: int) -> Iterator[ImageSource]:
        """Chunks of exactly `size` images (the last may be shorter), whichever streams they come from."""
        items = ((chunk, i) for stream in self.streams for chunk in stream.chunks(size) for i in range(len(chunk)))
        for group in _batched(items, size):
            yield _Joined(group, self.label_names)

    def __repr__(self) -> str:
        return f"ConcatStream({self.streams!r})"


class _Joined:
    """Images picked from several chunks: (chunk, index) pairs."""

    def __init__(self, items: list[tuple[ImageSource, int]], label_names: list[str] | None) -> None:
        self.items, self.label_names = items, label_names

    def __len__(self) -> int:
        return len(self.items)

    def key(self, i: int) -> str:
        chunk, j = self.items[i]
        return chunk.key(j)

    def open(self, i: int) -> Image.Image:
        chunk, j = self.items[i]
        return chunk.open(j)

    def label(self, i: int) -> int | None:
        chunk, j = self.items[i]
        return chunk.label(j)

    @property
    def paths(self) -> list[str] | None:
        if not all(hasattr(chunk, "paths") for chunk, _ in self.items):
            return None
        return [chunk.paths[j] for chunk, j in self.items]


class LimitedStream:
    """The first `limit` images of a stream."""

    def __init__(self, stream: ImageStream, limit: int) -> None:
        if limit < 1:
            raise UserError(f"--limit must be at least 1, got {limit}")
        self.stream, self.limit = stream, limit
        self.label_names, self.labelled = stream.label_names, stream.labelled

    def count(self) -> int:
        return min(self.limit, self.stream.count())

    def chunks(self, size: int) -> Iterator[ImageSource]:
        left = self.limit
        for chunk in self.stream.chunks(size):
            if left <= 0:
                return
            yield chunk if len(chunk) <= left else FirstImages(chunk, left)
            left -= len(chunk)

    def __repr__(self) -> str:
        return f"LimitedStream({self.stream!r}, {self.limit})"


def limited(images: ImageSource | ImageStream, limit: int | None) -> ImageSource | ImageStream:
    """`images` cut to its first `limit` images (None: all of them)."""
    if limit is None:
        return images
    return LimitedStream(images, limit) if isinstance(images, ImageStream) else FirstImages(images, limit)


def image_inputs(values: Sequence[str | os.PathLike[str]], *, option: str = "--images") -> ImageSource | ImageStream:
    """`--images` values as one input: folders (scanned), image files, list files, tar shard patterns.

    Folders and image files become one indexable source; a list file or tar shards make the
    whole input a stream, read chunk by chunk.
    """
    if not values:
        raise UserError(f"{option}: give a folder, image files, a list file or tar shards")
    parts: list[ImageSource | ImageStream] = []
    for value in values:
        text = os.fspath(value)
        if not text.strip():
            raise UserError(f"{option}: empty path; give a folder, a file or a tar pattern")
        path = Path(os.path.abspath(os.path.expanduser(text)))
        if is_tar_pattern(text) and (not path.is_dir()):
            parts.append(TarShardStream(text))
        elif path.is_dir():
            parts.append(FileListSource(scan_images(path)))
        elif path.suffix.lower() in LIST_SUFFIXES and path.is_file():
            parts.append(FileListStream(path))
        elif path.suffix.lower() in IMAGE_EXTENSIONS or path.exists() or os.path.islink(path):
            parts.append(FileListSource([path]))  # a file given by name: even a bad one is listed, not skipped
        else:
            raise FileNotFoundError(f"{option} {text}: no such file or folder")
    merged: list[ImageSource | ImageStream] = []
    for part in parts:  # neighbouring file lists merge into one source
        if isinstance(part, FileListSource) and merged and isinstance(merged[-1], FileListSource):
            merged[-1] = FileListSource([*merged[-1].paths, *part.paths])
        else:
            merged.append(part)
    if len(merged) == 1:
        return merged[0]
    return ConcatStream([p if isinstance(p, ImageStream) else SourceStream(p) for p in merged])
