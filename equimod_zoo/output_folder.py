"""The one rule for every output folder: it is new, empty, or an earlier output of the same command.

A command describes what it writes with an `OutputLayout`: its name, the entries it writes at the
top level, and how an earlier output of it is recognised (a marker such as config.json's
`equimod.written_by` or extraction.json). Anything else at `--out` (a folder of the user's own
files, another command's output, a file, the input being read) is refused with one line and left
untouched. Temporary files of an interrupted atomic write (`.NAME.*.tmp`) and the staging folders
of a killed run (`.NAME.PID.RANDOM.partial`) count as the command's own.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from equimod_zoo.errors import OutputRefusedError

OutputState = Literal["new", "empty", "earlier"]
_LEFTOVER = re.compile(r"\..+\.(tmp|partial|old)")  # equimod_zoo.atomic's temporaries, hub/staging's folders


@dataclass(frozen=True)
class OutputLayout:
    """What one command writes into its output folder."""

    command: str  # as the user types it: "extract", "train", "neighbours", "publish"...
    names: frozenset[str]  # the top-level entries it writes
    is_earlier_output: Callable[[Path], bool]  # whether a folder carries the command's marker


def check_output_folder(out: str | Path, layout: OutputLayout, *, sources: Collection[str | Path] = (),
                        option: str = "--out") -> OutputState:
    """Whether `out` is new, empty or an earlier output of `layout.command`; anything else raises
    OutputRefusedError naming `option`, and nothing is written."""
    out = Path(out)
    for source in sources:
        if _same_or_inside(Path(source), out):
            raise OutputRefusedError(f"{option} {out}: is (or holds) the source {source}; write the output "
                                     f"somewhere else")
    if not out.exists() and not out.is_symlink():
        return "new"
    if out.is_symlink() or not out.is_dir():
        raise OutputRefusedError(f"{option} {out}: not a folder this command wrote; choose another {option}")
    entries = sorted(p.name for p in out.iterdir() if not _LEFTOVER.fullmatch(p.name))
    if not entries:
        return "empty"
    if not layout.is_earlier_output(out):
        raise OutputRefusedError(f"{option} {out}: not a previous {layout.command} output (it holds "
                                 f"{_some(entries)}); its files stay as they are: choose a new or empty {option}")
    foreign = [name for name in entries if name not in layout.names]
    if foreign:
        raise OutputRefusedError(f"{option} {out}: holds {_some(foreign)}, which {layout.command} does not "
                                 f"write; its files stay as they are: choose a new or empty {option}")
    return "earlier"


def _some(names: list[str]) -> str:
    return names[0] + (f" and {len(names) - 1} more" if len(names) > 1 else "")


def _same_or_inside(source: Path, out: Path) -> bool:
    source, out = Path(os.path.realpath(source)), Path(os.path.realpath(out))
    return source == out or out in source.parents
