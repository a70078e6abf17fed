"""The output folder of `find_neighbours`: what it holds.

OUT follows the project's one output rule (`equimod_zoo.output_folder`): new, empty, or an earlier
output of `neighbours` (its neighbours.json says `"written_by": "neighbours"`, and indices/ holds
index folders only). An earlier output is replaced file by file, each atomically, neighbours.json
last; anything else is refused untouched.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from equimod_zoo.atomic import atomic_write_text
from equimod_zoo.errors import OutputRefusedError
from equimod_zoo.output_folder import OutputLayout, check_output_folder
from equimod_zoo.retrieval.index import INDEX_NAMES

MANIFEST = "neighbours.json"
SHEET = "neighbours.png"
INDICES = "indices"
WRITTEN_BY = "neighbours"


NEIGHBOURS_OUTPUT = OutputLayout("neighbours", frozenset({MANIFEST, SHEET, INDICES}),
                                 lambda folder: _written_by(folder / MANIFEST) == WRITTEN_BY)


def check_neighbours_output(out: Path) -> None:
    """The output-folder rule (`equimod_zoo.output_folder`), and indices/ of an earlier output holds index
    folders only."""
    if check_output_folder(out, NEIGHBOURS_OUTPUT) != "earlier" or not (out / INDICES).is_dir():
        return
    foreign = [f"{INDICES}/{p.name}" for p in sorted((out / INDICES).iterdir()) if not _is_index_folder(p)]
    if foreign:
        raise OutputRefusedError(f"--out {out}: holds {_some(foreign)}, which neighbours does not write; its "
                                 "files stay as they are: choose a new or empty --out")


def _is_index_folder(path: Path) -> bool:
    if path.is_symlink() or not path.is_dir():
        return False
    return all(p.name in INDEX_NAMES or p.name.startswith(".") and p.name.endswith(".tmp") for p in path.iterdir())


def _some(names: list[str]) -> str:
    return names[0] + (f" and {len(names) - 1} more" if len(names) > 1 else "")


def _written_by(manifest: Path) -> str | None:
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("written_by") if isinstance(data, dict) else None


def remove_stale_indices(out: Path, names: list[str]) -> None:
    """Index folders of an earlier run that this run did not write."""
    for path in (out / INDICES).iterdir():
        if path.name not in names:
            shutil.rmtree(path)  # check_output_folder let only index folders through


def write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
