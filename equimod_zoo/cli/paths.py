"""Path options that refuse an empty value: `--out ""` is a mistake, never the working folder."""
from __future__ import annotations

from pathlib import Path

import typer


def nonempty_path(value: str | Path) -> Path:
    """A typer `parser` for path options: the path, or a one-line error naming the option."""
    if isinstance(value, Path):
        return value
    if not value.strip():
        raise typer.BadParameter("empty path; give a file or folder (write . for the working folder)")
    return Path(value)
