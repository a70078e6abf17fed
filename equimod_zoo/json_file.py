"""Reading the project's small JSON files: the parsed value, or one line naming the file and the fault."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from equimod_zoo.errors import UserError


def read_json(path: str | Path, *, error: type[UserError] = UserError, expect: type | tuple[type, ...] | None = dict) -> Any:
    """The JSON value in `path`; a file that is not UTF-8 JSON (or not of type `expect`) raises `error`.

    A missing file raises FileNotFoundError, which callers turn into their own message where it matters.
    """
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as fault:
        raise error(f"{path}: not valid JSON ({fault})") from None
    return check_json_type(value, expect, where=str(path), error=error)


def parse_json(text: str, *, where: str, error: type[UserError] = UserError, expect: type | tuple[type, ...] | None = dict) -> Any:
    """`read_json` for a JSON text given on the command line (`where` names the option)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as fault:
        raise error(f"{where}: not valid JSON ({fault})") from None
    return check_json_type(value, expect, where=where, error=error)


def check_json_type(value: Any, expect: type | tuple[type, ...] | None, *, where: str,
                    error: type[UserError] = UserError) -> Any:
    if expect is not None and not isinstance(value, expect):
        names = {dict: "a JSON object", list: "a JSON list"}
        wanted = " or ".join(names.get(t, t.__name__) for t in (expect if isinstance(expect, tuple) else (expect,)))
        raise error(f"{where}: expected {wanted}, found {type(value).__name__}")
    return value
