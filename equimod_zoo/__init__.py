"""equimod-zoo: self-supervised backbones that keep colour and pose, in timm format.

Importing the package loads nothing heavy (the command line answers `--version` without torch):
each public name below imports its module on first use, and the CIFAR-stem architectures are
registered with timm when timm is imported (at once, if it already is).
"""
from __future__ import annotations

import importlib

from equimod_zoo.after_import import after_import
from equimod_zoo.lazy import lazy_attributes
from equimod_zoo.version import __version__

# Each public name and the module it lives in, imported on first use.
_LAZY = {
    "load": "equimod_zoo.loading",
    "list_models": "equimod_zoo.registry",
    "get_entry": "equimod_zoo.registry",
    "ZooEntry": "equimod_zoo.registry",
    "locate_weights": "equimod_zoo.weights",
    "extract_features": "equimod_zoo.extraction.extract",
    "load_features": "equimod_zoo.extraction.store",
    "linear_probe": "equimod_zoo.probes.linear",
    "knn_probe": "equimod_zoo.probes.knn",
}

__all__ = ["__version__", *_LAZY]

# resnet18_cifar and resnet50_cifar become timm architectures as soon as timm loads.
after_import("timm", lambda _timm: importlib.import_module("equimod_zoo.architectures"))
__getattr__ = lazy_attributes(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
