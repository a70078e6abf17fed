"""Where equimod-zoo caches derived data (decoded datasets, features, results), and how an input is known unchanged.

A changed input is never served from a cache. Caches on this machine (extraction's finished
shards, transfer's features and results) key each input file by `file_state`: its size, mtime,
ctime and inode. Any write to a file moves its ctime, which no user call can set back (utime sets
mtime only), so an image edited in place at the same size, with its mtime restored, still reads
as changed; a copy of the data reads as changed too, and is only extracted again. What travels
with a run (training's data fingerprint, compared by --resume on any copy of the data) hashes the
bytes instead (training/data.py).
"""
from __future__ import annotations

import os
from pathlib import Path

from equimod_zoo.constants import CACHE_ENV, DEFAULT_CACHE_DIR


def file_state(path: str | os.PathLike[str] | None) -> tuple[int, int, int, int]:
    """(size, mtime ns, ctime ns, inode) of a file, following links; all -1 when it cannot be read (a missing
    file is an input too)."""
    try:
        found = os.stat(path) if path else None
    except (OSError, ValueError):
        found = None
    return (found.st_size, found.st_mtime_ns, found.st_ctime_ns, found.st_ino) if found else (-1, -1, -1, -1)


def default_cache_dir() -> Path:
    """`$EQUIMOD_ZOO_CACHE`, else `~/.cache/equimod_zoo`."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser()
