"""Optional dependencies: imported where used, with one line naming the extra that installs them."""
from __future__ import annotations

import importlib
from types import ModuleType

from equimod_zoo.errors import MissingExtraError

# extra -> what it installs (pyproject.toml's optional-dependencies)
EXTRAS = {"plots": "matplotlib", "tensorboard": "tensorboard", "index": "faiss-cpu"}


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import `module`, or raise one line naming the package on the index that gives it (equimod-zoo itself
    installs from a checkout, where the extra `[extra]` adds it too)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = EXTRAS.get(extra, module.split(".")[0])
        raise MissingExtraError(f"{purpose} needs {package}, which is not installed: pip install {package} "
                                f"(or, in a checkout of equimod-zoo, pip install -e '.[{extra}]')") from None
