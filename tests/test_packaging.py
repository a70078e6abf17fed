"""Every package folder in the tree is installed: pyproject lists packages explicitly."""
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDER_OF = {"equimod_zoo.training": "training", "equimod_zoo.hub": "hub"}


def _folder(package: str) -> Path:
    for prefix, folder in FOLDER_OF.items():
        if package == prefix or package.startswith(prefix + "."):
            return ROOT / folder / Path(*package[len(prefix) + 1:].split(".")) if package != prefix else ROOT / folder
    return ROOT / Path(*package.split("."))


def test_every_package_folder_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = {_folder(p) for p in config["packages"]}
    on_disk = {
        init.parent
        for top in ("equimod_zoo", "training", "hub")
        for init in (ROOT / top).rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert on_disk == listed, f"add to pyproject [tool.setuptools] packages: {sorted(map(str, on_disk - listed))}"
