"""Where equimod-zoo caches derived data (decoded datasets, features, results)."""
from __future__ import annotations

import os
from pathlib import Path

from equimod_zoo.constants import CACHE_ENV, DEFAULT_CACHE_DIR


def default_cache_dir() -> Path:
    """`$EQUIMOD_ZOO_CACHE`, else `~/.cache/equimod_zoo`."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser()
