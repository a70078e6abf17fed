"""What extraction reads, from what a user names: images (folders, files, list files, tar shards) or a
dataset spec with its split; and the output folder it writes when none is named."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from equimod_zoo.data.sources import ImageSource
from equimod_zoo.data.streams import ImageStream, image_inputs, is_tar_pattern, limited
from equimod_zoo.errors import UserError

ImagesArgument = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | ImageSource | ImageStream


def open_inputs(
    images: ImagesArgument | None = None,
    *,
    dataset: str | None = None,
    split: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    streaming: bool = False,
    allow_outside_paths: bool = False,
    limit: int | None = None,
) -> str | Path | ImageSource | ImageStream:
    """The input of one extraction: exactly one of `images` or `dataset` (with its split, local copy
    and columns), cut to its first `limit` images.

    A single folder stays a path (extraction scans it); several inputs, files, list files and tar
    shard patterns become one source or stream (`equimod_zoo.data.streams.image_inputs`).
    """
    if (images is None) == (dataset is None):
        raise UserError("give exactly one of --images DIR or --dataset SPEC")
    if images is not None and (split or image_column or label_column or data_dir is not None or streaming):
        raise UserError("--split, --data-dir, --image-column, --label-column and --streaming apply to --dataset only")
    if dataset is not None:
        from equimod_zoo.data.spec import open_split, resolve_spec

        spec = resolve_spec(dataset, data_dir=data_dir, allow_outside_paths=allow_outside_paths)
        source = open_split(spec, split=split, image_column=image_column, label_column=label_column,
                            streaming=streaming)
        return limited(source, limit)
    if isinstance(images, (ImageSource, ImageStream)):
        return limited(images, limit)
    values = [images] if isinstance(images, (str, os.PathLike)) else list(images)
    single = Path(values[0]) if len(values) == 1 and os.fspath(values[0]).strip() else None
    if single is not None and limit is None and (
            single.is_dir() or not (single.exists() or is_tar_pattern(os.fspath(values[0])))):
        return single  # a folder is scanned by extract_features (a missing path fails there, by name)
    return limited(image_inputs(values), limit)


def input_paths(images: ImagesArgument | None, data_dir: str | os.PathLike[str] | None = None,
                dataset: str | None = None) -> list[Path]:
    """The local paths an extraction reads, which its output folder may not be or hold."""
    values: list[str | os.PathLike[str]] = []
    if isinstance(images, (str, os.PathLike)):
        values = [images]
    elif isinstance(images, Sequence):
        values = list(images)
    values += [value for value in (data_dir, dataset) if value is not None]
    return [Path(value) for value in values if os.fspath(value).strip() and Path(value).exists()]


def default_out(images: ImagesArgument | None, *, dataset: str | None = None, split: str | None = None,
                model: object) -> Path:
    """features/SOURCE[_SPLIT]_MODEL in the working folder: one folder per input and model, so a rerun
    resumes it and another model never collides with it."""
    if dataset is not None:
        source: object = dataset
    elif isinstance(images, (str, os.PathLike)) or not isinstance(images, Sequence):
        source = images
    else:
        source = images[0] if images else "input"
    parts = [_name(source), *([split] if split else []), _name(getattr(model, "label", model))]
    return Path("features") / "_".join(parts)


def _name(spec: object) -> str:
    if not isinstance(spec, (str, os.PathLike)):
        return type(spec).__name__.lower()
    path = Path(os.fspath(spec))
    return (path.resolve().name if path.exists() else path.name).replace(":", "_") or "input"
