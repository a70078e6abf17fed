"""equimod-zoo: self-supervised backbones that keep colour and pose, in timm format."""
from __future__ import annotations

import importlib
from typing import Any

from equimod_zoo import architectures as _architectures  # noqa: F401  registers resnet*_cifar with timm
from equimod_zoo.loading import load
from equimod_zoo.registry import ZooEntry, get_entry, list_models
from equimod_zoo.version import __version__
from equimod_zoo.weights import locate_weights

# Heavier parts import on first use, so `import equimod_zoo` stays quick.
_LAZY = {
    "extract_features": "equimod_zoo.extraction.extract",
    "load_features": "equimod_zoo.extraction.store",
    "linear_probe": "equimod_zoo.probes.linear",
    "knn_probe": "equimod_zoo.probes.knn",
}

__all__ = ["__version__", "load", "list_models", "get_entry", "locate_weights", "ZooEntry", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'equimod_zoo' has no attribute {name!r}")
