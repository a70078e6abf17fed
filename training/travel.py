"""What travels to the GPU machine, and the bundled weights kept out of it for a call.

A device call sends the checkout's tracked files, its untracked files that git does not ignore,
and the ignored folders it carries: 64 MiB in all. The zoo's bundled models are tracked and weigh
more than that, so for a call they come off git's index and are ignored (`untrack_bundled_models`).
Their files stay on disk; `retrack_bundled_models` puts the index back as HEAD has it and drops
the ignore line, so only the index ever changed. Do not commit in between: the commit would
delete the bundled models (`campaign collect` retracks before anything else).
"""
from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from equimod_zoo.errors import UserError

TRAVEL_LIMIT = 64 * 2**20  # bytes a device call sends: the working tree and what it carries
BUNDLED_MODELS = "equimod_zoo/zoo/models"
_MARK = "# equimod-zoo campaign: the bundled models stay off the GPU call (campaign retrack undoes it)"


def _git(root: Path, *args: str) -> str:
    try:
        return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True).stdout
    except subprocess.CalledProcessError as error:
        raise UserError(f"{root}: git {' '.join(args)} failed: {error.stderr.strip()}") from None


def repo_root(start: str | Path = ".") -> Path:
    """The top of the git checkout that holds `start`."""
    return Path(_git(Path(start).resolve(), "rev-parse", "--show-toplevel").strip())


def travelling_bytes(root: Path, carried: Sequence[str | Path] = ()) -> int:
    """Bytes a device call from `root` would send: tracked files, untracked ones git does not
    ignore, and the `carried` folders."""
    names = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    files = {root / name for name in names if name}
    for folder in carried:
        files.update(Path(folder).resolve().rglob("*"))
    return sum(path.stat().st_size for path in files if path.is_file())


def ignore_locally(root: Path, path: str | Path) -> None:
    """Ignore `path` (inside `root`) in this checkout only: .git/info/exclude, not .gitignore."""
    line = f"/{Path(path).resolve().relative_to(root).as_posix().rstrip('/')}/"
    exclude = _exclude_file(root)
    lines = exclude.read_text().splitlines() if exclude.is_file() else []
    if line not in lines:
        exclude.parent.mkdir(parents=True, exist_ok=True)
        exclude.write_text("\n".join([*lines, line]) + "\n")


def bundled_models_tracked(root: Path) -> bool:
    return bool(_git(root, "ls-files", "--", BUNDLED_MODELS).strip())


def untrack_bundled_models(root: Path) -> None:
    """Take the bundled models off the index and ignore them here; their files stay as they are."""
    if not bundled_models_tracked(root):
        return
    _git(root, "rm", "-r", "-q", "--cached", "--", BUNDLED_MODELS)
    exclude = _exclude_file(root)
    lines = exclude.read_text().splitlines() if exclude.is_file() else []
    exclude.parent.mkdir(parents=True, exist_ok=True)
    exclude.write_text("\n".join([*lines, _MARK, f"/{BUNDLED_MODELS}/"]) + "\n")


def retrack_bundled_models(root: Path) -> bool:
    """Undo `untrack_bundled_models`: the ignore lines go, the index gets HEAD's entries back.
    Returns whether there was anything to undo."""
    exclude = _exclude_file(root)
    lines = exclude.read_text().splitlines() if exclude.is_file() else []
    if _MARK not in lines:
        return False
    at = lines.index(_MARK)
    exclude.write_text("\n".join(lines[:at] + lines[at + 2:]) + "\n")
    _git(root, "reset", "-q", "--", BUNDLED_MODELS)
    return True


def _exclude_file(root: Path) -> Path:
    path = Path(_git(root, "rev-parse", "--git-path", "info/exclude").strip())
    return path if path.is_absolute() else root / path
