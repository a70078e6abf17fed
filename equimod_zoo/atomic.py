"""Atomic file writes: a temporary file in the same folder, then a rename.

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
