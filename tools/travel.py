"""What travels to the remote GPU machine, the wheels it lacks, and the bundled weights kept out of a call.

A call to the GPU machine sends the checkout's tracked files, its untracked files that git does not
ignore, and the ignored folders it carries: 64 MiB in all. The zoo's bundled models are tracked and
weigh more than that, so for a call they come off git's index and are ignored
(`untrack_bundled_models`). Their files stay on disk; `retrack_bundled_models` puts the index back
as HEAD has it and drops the ignore line, so only the index ever changed. Do not commit in between:
the commit would delete the bundled models (`campaign.py collect` retracks before anything else).

The GPU machine has Python 3.12 with its own torch, torchvision and timm and no `datasets`; the
wheels the training step needs beyond them travel too (`download_wheels`), at the versions this
checkout's tests ran with.
"""
from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

from equimod_zoo.errors import UserError

TRAVEL_LIMIT = 64 * 2**20  # bytes a call sends: the working tree and what it carries
BUNDLED_MODELS = "equimod_zoo/zoo/models"
# Installed on the GPU machine from the carried wheels (pip --no-deps --target): timm at our pinned
# version (the machine's own lacks what the step uses, such as LARS's `foreach`), and `datasets` with
# the two packages of its own that the machine lacks.
WHEELS = ("timm", "datasets", "dill", "multiprocess")
WHEEL_PYTHON = "3.12"
WHEEL_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "any")


def download_wheels(folder: Path, names: tuple[str, ...] = WHEELS) -> list[Path]:
    """The wheels of `names` at the versions installed here, for the GPU machine's Python, into `folder`."""
    pinned = [f"{name}=={metadata.version(name)}" for name in names]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", WHEEL_PYTHON, "--implementation", "cp",
                    *(f"--platform={p}" for p in WHEEL_PLATFORMS), "-d", str(folder), *pinned], check=True)
    return sorted(folder.glob("*.whl"))
_MARK = "# equimod-zoo campaign: the bundled models stay off the GPU call (campaign.py retrack undoes it)"


def _git(root: Path, *args: str) -> str:
    try:
        return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True).stdout
    except subprocess.CalledProcessError as error:
        raise UserError(f"{root}: git {' '.join(args)} failed: {error.stderr.strip()}") from None


def repo_root(start: str | Path = ".") -> Path:
    """The top of the git checkout that holds `start`."""
    return Path(_git(Path(start).resolve(), "rev-parse", "--show-toplevel").strip())


def travelling_bytes(root: Path) -> int:
    """Bytes of the checkout a call from `root` sends: tracked files and untracked ones git
    does not ignore (carried folders come on top: `folder_bytes`)."""
    names = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    return sum(path.stat().st_size for path in (root / name for name in names if name) if path.is_file())


def folder_bytes(folder: str | Path) -> int:
    """Bytes of every file below `folder`."""
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


def ignore_locally(root: Path, path: str | Path) -> None:
    """Ignore `path` (inside `root`) in this checkout only: .git/info/exclude, not .gitignore."""
    line = f"/{Path(path).resolve().relative_to(root).as_posix().rstrip('/')}/"
    lines = _exclude_lines(root)
    if line not in lines:
        _write_exclude(root, [*lines, line])


def bundled_models_tracked(root: Path) -> bool:
    return bool(_git(root, "ls-files", "--", BUNDLED_MODELS).strip())


def untrack_bundled_models(root: Path) -> None:
    """Take the bundled models off the index and ignore them here; their files stay as they are."""
    if not bundled_models_tracked(root):
        return
    _git(root, "rm", "-r", "-q", "--cached", "--", BUNDLED_MODELS)
    _write_exclude(root, [*_exclude_lines(root), _MARK, f"/{BUNDLED_MODELS}/"])


def retrack_bundled_models(root: Path) -> bool:
    """Undo `untrack_bundled_models`: the ignore lines go, the index gets HEAD's entries back.
    Returns whether there was anything to undo."""
    lines = _exclude_lines(root)
    if _MARK not in lines:
        return False
    at = lines.index(_MARK)
    _write_exclude(root, lines[:at] + lines[at + 2:])
    _git(root, "reset", "-q", "--", BUNDLED_MODELS)
    return True


def _exclude_file(root: Path) -> Path:
    path = Path(_git(root, "rev-parse", "--git-path", "info/exclude").strip())
    return path if path.is_absolute() else root / path


def _exclude_lines(root: Path) -> list[str]:
    exclude = _exclude_file(root)
    return exclude.read_text().splitlines() if exclude.is_file() else []


def _write_exclude(root: Path, lines: list[str]) -> None:
    exclude = _exclude_file(root)
    exclude.parent.mkdir(parents=True, exist_ok=True)
    exclude.write_text("\n".join(lines) + "\n")
