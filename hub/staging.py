"""Writing an output folder safely: build it beside the target, replace only our own previous output,
and clean what a killed run left behind.

A folder is staged as `.NAME.PID.RANDOM.partial` beside `NAME` and renamed into place; a previous
`NAME` is set aside as `.NAME.PID.RANDOM.old` for the swap. A run killed with SIGKILL leaves
those behind (often 100 MB of weights): the next write to `NAME` removes the ones whose process
is gone, and puts a set-aside `.old` back where no `NAME` survived.

`--overwrite` replaces `NAME` only when it is a previous output of the same command (its
config.json says `equimod.written_by`, and it holds nothing that command did not write) and not
the source being read; anything else, such as a training run with its checkpoint, or a folder
of the user's own files, is refused.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Collection, Iterator
from pathlib import Path

from equimod_zoo.constants import CONFIG_FILE, METADATA_KEY
from equimod_zoo.errors import OutputRefusedError
from equimod_zoo.output_folder import OutputLayout, check_output_folder

_DEBRIS = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.(?P<kind>partial|old)")



def written_by(folder: Path) -> str | None:
    """The command that wrote a model folder (`equimod.written_by` of its config.json), or None."""
    try:
        data = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    meta = data.get(METADATA_KEY) if isinstance(data, dict) else None
    value = meta.get("written_by") if isinstance(meta, dict) else None
    return value if isinstance(value, str) else None


def check_output(out: Path, *, kind: str, files: Collection[str], sources: Collection[Path], overwrite: bool,
                 option: str = "--out") -> None:
    """The output-folder rule (`equimod_zoo.output_folder`) for a model folder written whole: `out` is new or
    empty, or, with `overwrite`, a previous `kind` output (its config.json says `equimod.written_by`).

    Args:
        out: the folder about to be written.
        kind: the `equimod.written_by` value the command writes ("export", "convert").
        files: the names the command writes; any other entry in `out` belongs to someone else.
        sources: paths being read; `out` may not be, or contain, any of them.
        overwrite: whether the user asked to replace a previous output.
    """
    layout = OutputLayout(kind, frozenset(files), lambda folder: written_by(folder) == kind)
    state = check_output_folder(out, layout, sources=sources, option=option)
    if state == "earlier" and not overwrite:
        raise OutputRefusedError(f"{out}: already exists; choose another {option} or pass --overwrite")


@contextlib.contextmanager
def staging_dir(out: Path) -> Iterator[Path]:
    """A fresh folder beside `out`, removed unless it was moved into place; dead runs' debris is cleaned first."""
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_debris(out)
    stage = _sibling(out, "partial")
    stage.mkdir(mode=0o700)
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def move_into_place(stage: Path, out: Path) -> None:
    """Rename `stage` onto `out`; an existing `out` is set aside first and restored if the rename fails."""
    _umask_permissions(stage)
    old = None
    if out.exists():
        old = _sibling(out, "old")
        os.replace(out, old)
    try:
        os.replace(stage, out)
    except OSError:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def clean_debris(out: Path) -> list[Path]:
    """Remove the staging folders of `out` that a killed process left; restore a set-aside `out`. Returns them."""
    if not out.parent.is_dir():
        return []
    cleaned = []
    for path in sorted(out.parent.iterdir()):
        match = _DEBRIS.fullmatch(path.name)
        if not match or match["name"] != out.name or _alive(int(match["pid"])):
            continue
        if match["kind"] == "old" and not out.exists():
            os.replace(path, out)  # the swap was cut between its two renames: the previous output comes back
        else:
            shutil.rmtree(path, ignore_errors=True)
        cleaned.append(path)
    return cleaned


def _sibling(out: Path, kind: str) -> Path:
    return out.parent / f".{out.name}.{os.getpid()}.{secrets.token_hex(4)}.{kind}"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _umask_permissions(folder: Path) -> None:
    """Staged files are private (0600/0700); a finished folder gets the usual modes."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~umask)
