"""A package's public names, each imported from its module on first use (PEP 562's module `__getattr__`).

`import equimod_zoo` (and its `training` and `hub` packages) must not import torch: their
`__init__` lists what they offer, and the name's module loads when the name is first asked for.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """The module `__getattr__` of `package`: `exports[name]` is the module a public name comes from."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
