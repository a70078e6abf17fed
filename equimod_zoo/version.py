"""equimod-zoo's version: pyproject.toml is its one home, the installed distribution's metadata carries it."""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from equimod_zoo.constants import DISTRIBUTION

try:
    __version__ = version(DISTRIBUTION)
except PackageNotFoundError:  # a source tree on sys.path without being installed
    __version__ = "0+unknown"
