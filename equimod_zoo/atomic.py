"""Atomic writes: a file through a temporary file in the same folder, a folder through a staging folder
beside it; then a rename.

A folder is staged as `.NAME.PID.RANDOM.partial` beside `NAME` and renamed into place; a previous
`NAME` is set aside as `.NAME.PID.RANDOM.old` for the swap. A run killed with SIGKILL leaves
those behind (often 100 MB of weights): the next write to `NAME` removes the ones whose process
is gone, and puts a set-aside `.old` back where no `NAME` survived.
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

_DEBRIS = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.(?P<kind>partial|old)")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide shared outputs from other users
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file for writing; it replaces `path` only when the block succeeds."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
