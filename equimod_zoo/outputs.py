"""The one rule for an output folder, in every command: new, empty, or an earlier output of the same
command, and never the input it reads.

A folder of someone's own files is never written into, nor a folder that holds the command's
input (the images being extracted, the model being exported). Extraction resumes an earlier
extraction in place; the publishing tools replace an earlier export only with --overwrite
(`equimod_zoo.hub.staging`, which builds on these checks).
"""
from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

from equimod_zoo.errors import OutputRefusedError


def is_or_holds(out: str | os.PathLike[str], path: str | os.PathLike[str]) -> bool:
    """Whether `out` is `path` or a folder above it (symbolic links resolved)."""
    out, path = Path(os.path.realpath(out)), Path(os.path.realpath(path))
    return out == path or out in path.parents


def foreign_entries(out: Path, files: Collection[str], *, temporaries_of: Collection[str] = ()) -> list[str]:
    """The entries of `out` other than `files` and the atomic temporaries (`.NAME.*.tmp`, left by a
    killed run) of `temporaries_of`, sorted."""
    def ours(name: str) -> bool:
        return name in files or any(name.startswith(f".{file}.") and name.endswith(".tmp") for file in temporaries_of)

    return sorted(entry.name for entry in out.iterdir() if not ours(entry.name))


def describe(names: list[str]) -> str:
    """`a` or `a and 3 more`: a folder's contents in a one-line message."""
    return names[0] + (f" and {len(names) - 1} more" if len(names) > 1 else "")


def check_output_folder(out: str | os.PathLike[str], *, command: str, earlier: bool, files: Collection[str],
                        sources: Collection[str | os.PathLike[str]] = (), option: str = "--out") -> None:
    """Refuse `out` unless it is new, empty, or an earlier output of `command` that holds nothing else.

    Args:
        out: the folder about to be written.
        command: the command's name, as the message shows it ("extract").
        earlier: whether `out` carries the command's own record of an earlier output (its manifest).
        files: the names the command writes in `out`; anything else belongs to someone else.
        sources: paths the command reads; `out` may not be, or hold, any of them.
        option: the option that named `out`, for the message.
    """
    out = Path(out)
    for source in sources:
        if is_or_holds(out, source):
            raise OutputRefusedError(f"{option} {out}: is (or holds) the input {source}; write the output "
                                     f"somewhere else")
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() and not out.exists() or not out.is_dir():
        raise OutputRefusedError(f"{option} {out}: exists and is not a folder; choose a new or empty folder")
    # an earlier output may hold what the command writes; any other folder must be empty
    foreign = foreign_entries(out, files if earlier else (), temporaries_of=files)
    if not foreign:
        return
    if earlier:
        raise OutputRefusedError(f"{option} {out}: holds {describe(foreign)}, which {command} does not write; "
                                 f"its files stay as they are. Choose a new or empty folder")
    raise OutputRefusedError(f"{option} {out}: holds {describe(foreign)} and is not an earlier output of {command}; "
                             f"its files stay as they are. Choose a new or empty folder")
