"""Run a function right after a module is first imported, without importing it ourselves.

`import equimod_zoo` must stay cheap (the command line answers `--version` without torch), yet
plain timm must know the CIFAR-stem architectures once `equimod_zoo` is imported. So the package
registers them when timm loads: at once if timm is already imported, else the moment it is.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import threading
from collections.abc import Callable
from types import ModuleType

Callback = Callable[[ModuleType], None]


class _AfterImportFinder(importlib.abc.MetaPathFinder):
    """A finder that finds nothing itself: it wraps the real loader of a watched module."""

    def __init__(self) -> None:
        self.callbacks: dict[str, list[Callback]] = {}
        self._lock = threading.Lock()
        self._finding: set[str] = set()

    def find_spec(self, fullname, path, target=None):  # noqa: ANN001 (the MetaPathFinder protocol)
        if fullname not in self.callbacks or fullname in self._finding:
            return None
        self._finding.add(fullname)
        try:  # the spec the other finders give
            spec = importlib.util.find_spec(fullname)
        finally:
            self._finding.discard(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_call(module: ModuleType) -> None:
            exec_module(module)
            for callback in self._take(fullname):
                callback(module)

        spec.loader.exec_module = exec_then_call  # this spec's loader only
        return spec

    def add(self, name: str, callback: Callback) -> None:
        with self._lock:
            self.callbacks.setdefault(name, []).append(callback)

    def _take(self, name: str) -> list[Callback]:
        with self._lock:
            return self.callbacks.pop(name, [])


_FINDER = _AfterImportFinder()


def after_import(name: str, callback: Callback) -> None:
    """Call `callback(module)` once the top-level module `name` is imported: now if it already is."""
    module = sys.modules.get(name)
    if module is not None:
        callback(module)
        return
    _FINDER.add(name, callback)
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
