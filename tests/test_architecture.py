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


# --- one home for each word ----------------------------------------------------------------------------------------

ROOTS = [ROOT / name for name in ("equimod_zoo", "training", "hub", "tools", "bench")]
CONSTANTS = CORE / "constants.py"
GENERATED = {CORE / "pretrained_tags.py"}
# constants.py's names that no other module defines, and those whose value no other module spells out
ONE_DEFINITION = ("CONFIG_FILE", "WEIGHTS_FILE", "HEADS_FILE", "CARD_FILE", "PROBE_FILE", "METADATA_KEY", "RECIPE_FILE",
                  "LOG_FILE", "TENSORBOARD_DIR", "CHECKPOINT_FILE", "DATA_ENV", "CACHE_ENV", "DEFAULT_CACHE_DIR",
                  "DEFAULT_MODEL", "PAPER_ID", "DISTRIBUTION", "CIFAR_ARCHITECTURES", "CIFAR10_MEAN", "CIFAR10_STD")
NO_LITERAL = ("CONFIG_FILE", "WEIGHTS_FILE", "HEADS_FILE", "PROBE_FILE", "RECIPE_FILE", "LOG_FILE", "CHECKPOINT_FILE",
              "DATA_ENV", "CACHE_ENV", "PAPER_ID")
# Modules that exist on one operating system only: imported at module level they break the package elsewhere.
ONE_OS_MODULES = ("fcntl", "msvcrt", "termios", "tty", "pty", "pwd", "grp", "resource", "winreg", "_winapi", "posix",
                  "nt", "winsound", "readline", "crypt", "spwd", "nis", "syslog")


def _sources(roots=ROOTS):
    return [p for root in roots if root.is_dir() for p in sorted(root.rglob("*.py")) if p not in GENERATED]


def _docstrings(tree: ast.AST) -> set[int]:
    return {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}


def shared_word_violations(sources, constants_file=CONSTANTS) -> list[str]:
    """'file:line ...' for a constant defined outside constants.py, or its value (a file name, an environment
    variable) written out as a string literal."""
    namespace: dict = {}
    exec(compile(constants_file.read_text(), str(constants_file), "exec"), namespace)
    values = {namespace[name]: name for name in NO_LITERAL}
    found = []
    for path in sources:
        if path == constants_file:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                node, ast.AnnAssign) else []
            found += [f"{path.name}:{node.lineno} defines {t.id}" for t in targets
                      if isinstance(t, ast.Name) and t.id in ONE_DEFINITION]
        docs = _docstrings(tree)
        found += [f"{path.name}:{node.lineno} spells out {values[node.value]} ({node.value!r})"
                  for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)
                  and node.value in values and id(node) not in docs]
    return found


def one_os_imports(sources) -> list[str]:
    """'file:line imports X' for a module-level import of a module that exists on one operating system only."""
    found = []
    for path in sources:
        for node in ast.parse(path.read_text(), filename=str(path)).body:
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.name}:{node.lineno} imports {n}" for n in names if n.split(".")[0] in ONE_OS_MODULES]
    return found


def test_each_shared_name_has_one_home():
    assert shared_word_violations(_sources()) == []


def test_no_module_imports_a_one_os_module_at_import_time():
    assert one_os_imports(_sources()) == []


def test_the_guards_catch_planted_violations(tmp_path):
    (tmp_path / "run.py").write_text('"""Reads config.json."""\nCHECKPOINT_FILE = "ckpt.pt"\npath = "checkpoint.pt"\n')
    (tmp_path / "lock.py").write_text("import fcntl\n\ndef later():\n    import msvcrt\n")
    found = shared_word_violations([tmp_path / "run.py"])
    assert found == ["run.py:2 defines CHECKPOINT_FILE", "run.py:3 spells out CHECKPOINT_FILE ('checkpoint.pt')"]
    assert one_os_imports([tmp_path / "lock.py"]) == ["lock.py:1 imports fcntl"]


# --- a broken invariant keeps its traceback --------------------------------------------------------------------------

# Modules whose functions take tensors from our own code: a wrong shape or dtype there is a bug, not a user's
# mistake, so it is a plain exception (ValueError, TypeError) that keeps its traceback, never a UserError.
TENSOR_CODE = [*(ROOT / "training").glob("*.py"),
               *(CORE / "equimod" / name for name in ("augment.py", "heads.py", "loss.py", "module.py", "distributed.py"))]


def user_errors_from_tensor_code(sources) -> list[str]:
    """'file:line function raises X' for a UserError (or subclass) raised in a function that takes a Tensor."""
    from equimod_zoo import errors

    user_error_names = {name for name, value in vars(errors).items()
                        if isinstance(value, type) and issubclass(value, errors.UserError)}
    found = []
    for path in sources:
        for function in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            arguments = [*function.args.posonlyargs, *function.args.args, *function.args.kwonlyargs]
            if not any(a.annotation is not None and "Tensor" in ast.unparse(a.annotation) for a in arguments):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Raise) and node.exc is not None:
                    raised = ast.unparse(node.exc.func if isinstance(node.exc, ast.Call) else node.exc)
                    if raised in user_error_names:
                        found.append(f"{path.name}:{node.lineno} {function.name} raises {raised}")
    return found


def test_tensor_code_raises_no_user_error():
    assert [p for p in TENSOR_CODE if not p.is_file()] == []
    assert user_errors_from_tensor_code(TENSOR_CODE) == []


def test_the_tensor_guard_catches_a_planted_user_error(tmp_path):
    (tmp_path / "loss.py").write_text("def loss(a: Tensor, b: Tensor):\n    if a.shape != b.shape:\n"
                                      "        raise UserError('shapes differ')\n"
                                      "def config(width: int):\n    raise UserError('a user mistake')\n")
    assert user_errors_from_tensor_code([tmp_path / "loss.py"]) == ["loss.py:3 loss raises UserError"]


# --- DEVELOPERS.md's map of the code matches the tree ----------------------------------------------------------------

def test_the_developers_map_names_every_module_and_only_modules_that_exist():
    import re

    text = (ROOT / "DEVELOPERS.md").read_text()
    table = text[text.index("## Map of the code"):text.index("\n## ", text.index("## Map of the code") + 1)]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    named: set[Path] = set()
    for row in rows:
        cells = row.split("|")
        where, files = cells[1], cells[2]
        for path in re.findall(r"`([\w/.]+)`", where):
            named.add(ROOT / path)
        folder = re.match(r"\s*`([\w/]+/)`", where)
        if folder:  # a folder row names its modules by file name
            named.update(ROOT / folder.group(1) / name for name in re.findall(r"`([\w]+\.py)`", files))
    missing = [p for p in named if not p.exists()]
    assert missing == [], f"DEVELOPERS.md names what does not exist: {missing}"
    modules = [p for root in ("equimod_zoo", "training", "hub", "tools") for p in (ROOT / root).rglob("*.py")
               if p.name != "__init__.py" and "__pycache__" not in p.parts]
    unnamed = sorted(str(p.relative_to(ROOT)) for p in modules if p not in named)
    assert unnamed == [], f"DEVELOPERS.md's map of the code does not name {unnamed}"
