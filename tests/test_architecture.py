"""The data flows one way: the core (`equimod_zoo/` except its CLI) never imports the trainer or the hub tools.

training/ installs as `equimod_zoo.training` and hub/ as `equimod_zoo.hub`; they and the CLI
import the core, never the reverse. Checked on the source with `ast`, so an import inside a
function (the usual way to hide a cycle) counts as much as one at the top.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "equimod_zoo"
CLI = CORE / "cli"
# Modules the core must not import, with any of their submodules.
FORBIDDEN = ("equimod_zoo.training", "equimod_zoo.hub", "equimod_zoo.cli", "training", "hub")


def _module_of(path: Path, root: Path) -> list[str]:
    """The dotted package of `path` (relative to `root`'s parent), as a list: equimod_zoo/a/b.py -> [equimod_zoo, a]."""
    return list(path.relative_to(root.parent).parent.parts)


def imported_modules(path: Path, root: Path = CORE) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in `path`; relative imports resolved against its package.

    `from A import b` yields both A and A.b (b may be a submodule)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_of(path, root)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
    return found


def violations(root: Path = CORE, cli: Path | None = None) -> list[str]:
    """'file:line imports module' for each import in the core that runs against the flow."""
    cli = root / "cli" if cli is None else cli
    bad = {}
    for path in sorted(root.rglob("*.py")):
        if path.is_relative_to(cli) or path == root / "__main__.py":  # `python -m equimod_zoo` is the CLI's door
            continue
        for line, module in imported_modules(path, root):
            if any(module == f or module.startswith(f + ".") for f in FORBIDDEN):
                bad.setdefault((str(path.relative_to(root.parent)), line), module)  # one per import statement
    return [f"{file}:{line} imports {module}" for (file, line), module in sorted(bad.items())]


def test_the_core_never_imports_the_trainer_the_hub_tools_or_the_cli():
    assert violations() == []


@pytest.mark.parametrize("source", [
    "from equimod_zoo.training.recipe import load_recipe\n",
    "import equimod_zoo.hub.publish\n",
    "from equimod_zoo import hub\n",
    "def f():\n    from equimod_zoo.cli import app\n",
    "from ..training import trainer\n",
    "from .. import hub\n",
    "import training.recipe\n",
])
def test_a_planted_bad_import_is_caught(tmp_path, source):
    core = tmp_path / "equimod_zoo"
    (core / "cli").mkdir(parents=True)
    (core / "sensitivity").mkdir()
    (core / "cli" / "ok.py").write_text("from equimod_zoo.training.trainer import train\n")  # the CLI may
    (core / "sensitivity" / "fine.py").write_text("from equimod_zoo.equimod.augment import BatchedAugment\n"
                                                  "from . import probes\n")
    assert violations(core) == []
    (core / "sensitivity" / "bad.py").write_text(source)
    found = violations(core)
    assert len(found) == 1 and found[0].startswith("equimod_zoo/sensitivity/bad.py:")
