"""Where equimod-zoo caches derived data (decoded datasets, features, results)."""
from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "EQUIMOD_ZOO_CACHE"


def default_cache_dir() -> Path:
    """`$EQUIMOD_ZOO_CACHE`, else `~/.cache/equimod_zoo`."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "equimod_zoo").expanduser()
