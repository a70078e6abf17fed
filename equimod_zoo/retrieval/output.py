"""The output folder of `find_neighbours`: what it holds, and the rule for writing into one.

OUT is new, empty, or an earlier output of the same command: its neighbours.json says
`"written_by": "neighbours"`, and it holds nothing but the names below (indices/ nothing but index
folders). That earlier output is then replaced, file by file, each file atomically, its
neighbours.json last; anything else (a folder of the user's own files, a feature store) is refused
untouched.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from equimod_zoo.atomic import atomic_write_text
from equimod_zoo.errors import UserError
from equimod_zoo.retrieval.index import INDEX_NAMES

MANIFEST = "neighbours.json"
SHEET = "neighbours.png"
INDICES = "indices"
WRITTEN_BY = "neighbours"
_OUR_NAMES = frozenset({MANIFEST, SHEET, INDICES})


def check_output_folder(out: Path) -> None:
    """Refuse `out` unless it is new, empty, or an earlier output of `find_neighbours`."""
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder; choose another --out")
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    if _written_by(out / MANIFEST) != WRITTEN_BY:
        raise UserError(f"{out}: holds {_some(entries)} and is not an earlier output of equimod-zoo neighbours "
                        f"(no {MANIFEST} of it); its files stay as they are. Choose another --out")
    foreign = [name for name in entries if name not in _OUR_NAMES]
    indices = out / INDICES
    if indices.is_dir():  # index folders only, each as write_index leaves it
        foreign += [f"{INDICES}/{p.name}" for p in sorted(indices.iterdir()) if not _is_index_folder(p)]
    if foreign:
        raise UserError(f"{out}: holds {_some(foreign)}, which equimod-zoo neighbours does not write; its files "
                        f"stay as they are. Choose another --out")


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
