"""Writing an output folder safely: build it beside the target, replace only our own previous output,
and clean what a killed run left behind.

A folder is staged as `.NAME.PID.RANDOM.partial` beside `NAME` and renamed into place; a previous
`NAME` is set aside as `.NAME.PID.RANDOM.old` for the swap. A run killed with SIGKILL leaves
those behind (often 100 MB of weights): the next write to `NAME` removes the ones whose process
is gone, and puts a set-aside `.old` back where no `NAME` survived.

The checks are every command's (`equimod_zoo.outputs`). `--overwrite` replaces `NAME` only when
it is a previous output of the same command (its config.json says `equimod.written_by`, and it
holds nothing that command did not write) and not the source being read; anything else, such as
a training run with its checkpoint, or a folder of the user's own files, is refused.
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

from equimod_zoo.errors import OutputRefusedError
from equimod_zoo.outputs import describe, foreign_entries, is_or_holds

CONFIG_FILE = "config.json"  # equimod_zoo.model_folder.CONFIG_FILE, read here without importing torch
_DEBRIS = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.(?P<kind>partial|old)")



def written_by(folder: Path) -> str | None:
    """The command that wrote a model folder (`equimod.written_by` of its config.json), or None."""
    try:
        data = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    meta = data.get("equimod") if isinstance(data, dict) else None
    value = meta.get("written_by") if isinstance(meta, dict) else None
    return value if isinstance(value, str) else None


def check_output(out: Path, *, kind: str, files: Collection[str], sources: Collection[Path], overwrite: bool,
                 option: str = "--out") -> None:
    """Refuse `out` unless it is absent, or `overwrite` is set and `out` is a previous `kind` output.

    Args:
        out: the folder about to be written.
        kind: the `equimod.written_by` value the command writes ("export", "convert").
        files: the names the command writes; any other entry in `out` belongs to someone else.
        sources: paths being read; `out` may not be, or contain, any of them.
        overwrite: whether the user asked to replace a previous output.
    """
    for source in sources:
        if is_or_holds(out, source):
            raise OutputRefusedError(f"{option} {out}: is (or holds) the source {source}; write the output "
                                     "somewhere else")
    if not out.exists() and not out.is_symlink():
        return
    if not overwrite:
        raise OutputRefusedError(f"{out}: already exists; choose another {option} or pass --overwrite")
    if out.is_symlink() or not out.is_dir():
        raise OutputRefusedError(f"{option} {out}: not a folder this command wrote; --overwrite replaces only "
                                 f"a previous {kind} output")
    if written_by(out) != kind:
        raise OutputRefusedError(f"{option} {out}: not a previous {kind} output (its config.json does not say "
                                 f"equimod.written_by={kind!r}); --overwrite replaces only those")
    foreign = foreign_entries(out, files)
    if foreign:
        raise OutputRefusedError(f"{option} {out}: holds {describe(foreign)}, which {kind} does not write; "
                                 f"refusing to replace it")


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
