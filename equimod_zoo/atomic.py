"""Atomic writes: a file through a temporary file in the same folder, a folder through a staging folder
beside it; then a rename.

A folder is staged as `.NAME.PID.RANDOM.partial` beside `NAME` and renamed into place; a previous
`NAME` is set aside as `.NAME.PID.RANDOM.old` for the swap. A run killed with SIGKILL leaves
those behind (often 100 MB of weights): the next write to `NAME` removes the ones whose process
is gone, and puts a set-aside `.old` back where no `NAME` survived.

A write the disk refuses (full, over quota, read-only, not permitted) ends in one `DiskError` that
names the file meant to be written and what to do, whichever library was writing: numpy, pyarrow
and Python report the operating system's errno, but torch.save and safetensors turn it into a
RuntimeError or their own error. So when a write fails without an errno, the folder is asked for a
small write of its own, with the partial file still in place: if the disk refuses that too, the
disk is the cause; if not, the failure is a bug and keeps its traceback.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from equimod_zoo.errors import DiskError, UserError

# The errors with which a disk refuses a write, and what the user can do about each.
_FREE_SPACE = "free some space, or write to a folder on another disk, and rerun"
_WRITABLE = "use a folder you have the rights to, and rerun"
DISK_ERRNOS = {
    errno.ENOSPC: f"no space left on the device; {_FREE_SPACE}",
    errno.EDQUOT: f"over the disk quota; {_FREE_SPACE}",
    errno.EFBIG: f"file too large for this file system (or the file size limit); {_FREE_SPACE}",
    errno.EROFS: f"read-only file system; {_WRITABLE}",
    errno.EACCES: f"permission denied; {_WRITABLE}",
    errno.EPERM: f"operation not permitted; {_WRITABLE}",
}
_PROBE_BYTES = 1 << 16


def disk_error(error: OSError, path: str | os.PathLike[str] | None = None) -> OSError:
    """`error` as a one-line DiskError naming `path` (or the error's own file) when the disk refused; else `error`."""
    if isinstance(error, DiskError) or error.errno not in DISK_ERRNOS:
        return error
    where = os.fspath(path) if path is not None else error.filename
    refused = DiskError(f"{where or 'an output file'}: {DISK_ERRNOS[error.errno]}")
    refused.errno, refused.filename = error.errno, where
    return refused


@contextlib.contextmanager
def named_writes(path: str | os.PathLike[str]) -> Iterator[None]:
    """Writes to `path` outside `atomic_path` (an appended log): a refusal of the disk names the file."""
    try:
        yield
    except OSError as error:
        refused = disk_error(error, path)
        if refused is error:
            raise
        raise refused from None

_DEBRIS = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.(?P<kind>partial|old)")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` if the block succeeds."""
    target = Path(path)
    with named_writes(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide shared outputs from other users
        os.replace(tmp, target)
    except Exception as error:
        refused = _refusal(error, target)  # asked before the partial file goes: it may be what filled the disk
        if refused is None:
            raise
        raise refused from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _refusal(error: Exception, target: Path) -> DiskError | None:
    """The disk's refusal behind a failed write of `target`, or None when the disk takes writes (a bug)."""
    if isinstance(error, UserError):  # a check inside the block: already one line
        return None
    if isinstance(error, OSError) and error.errno is not None:
        refused = disk_error(error, target)
        return refused if isinstance(refused, DiskError) else None
    try:  # no errno to go by (torch.save, safetensors, numpy): can the folder take a small write now?
        with tempfile.TemporaryFile(dir=target.parent) as probe:
            probe.write(b"\0" * _PROBE_BYTES)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as probe_error:
        refused = disk_error(probe_error, target)
        return refused if isinstance(refused, DiskError) else None
    return None


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
