"""Optional dependencies: imported where used, with one line naming the extra that installs them."""
from __future__ import annotations

import importlib
from types import ModuleType

from equimod_zoo.errors import MissingExtraError

# extra -> what it installs (pyproject.toml's optional-dependencies)
EXTRAS = {"plots": "matplotlib", "tensorboard": "tensorboard", "index": "faiss-cpu"}



def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import `module`, or raise one line saying `pip install 'equimod-zoo[extra]'` gives it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"{purpose} needs {EXTRAS.get(extra, module.split('.')[0])}, which is not "
                                f"installed: pip install 'equimod-zoo[{extra}]'") from None
