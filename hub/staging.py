"""The publishing tools' output check: replace only our own previous output (the folder itself is built
beside its target and renamed into place by `equimod_zoo.atomic.staging_dir` and `move_into_place`).

The checks are every command's (`equimod_zoo.output_folder`). `--overwrite` replaces `NAME` only when
it is a previous output of the same command (its config.json says `equimod.written_by`, and it
holds nothing that command did not write) and not the source being read; anything else, such as
a training run with its checkpoint, or a folder of the user's own files, is refused.
"""
from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path

from equimod_zoo.constants import CONFIG_FILE, METADATA_KEY
from equimod_zoo.errors import OutputRefusedError
from equimod_zoo.output_folder import OutputLayout, check_output_folder


def written_by(folder: Path) -> str | None:
    """The command that wrote a model folder (`equimod.written_by` of its config.json), or None."""
    try:
        data = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    meta = data.get(METADATA_KEY) if isinstance(data, dict) else None
    value = meta.get("written_by") if isinstance(meta, dict) else None
    return value if isinstance(value, str) else None


def check_output(out: Path, *, kind: str, files: Collection[str], sources: Collection[Path], overwrite: bool,
                 option: str = "--out") -> None:
    """The output-folder rule (`equimod_zoo.output_folder`) for a model folder written whole: `out` is new or
    empty, or, with `overwrite`, a previous `kind` output (its config.json says `equimod.written_by`).

    Args:
        out: the folder about to be written.
        kind: the `equimod.written_by` value the command writes ("export", "convert").
        files: the names the command writes; any other entry in `out` belongs to someone else.
        sources: paths being read; `out` may not be, or contain, any of them.
        overwrite: whether the user asked to replace a previous output.
    """
    layout = OutputLayout(kind, frozenset(files), lambda folder: written_by(folder) == kind)
    state = check_output_folder(out, layout, sources=sources, option=option)
    if state == "earlier" and not overwrite:
        raise OutputRefusedError(f"{out}: already exists; choose another {option} or pass --overwrite")
