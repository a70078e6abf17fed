"""The one YAML reader (and writer): recipes, `--set` values, the campaign queue and card front matter.

YAML can attack its reader: a few hundred bytes of nested anchors and aliases (the "billion
laughs") expand to gigabytes once walked, a tag such as `!!python/object` asks for code to run, and
deep nesting exhausts the recursive composer. Our files need none of that, so this reader refuses
anchors, aliases and explicit tags outright (rather than bounding an expansion), and bounds the
text's size and nesting depth (equimod_zoo.limits) before composing it. Every refusal, like every
syntax error, is one UserError line that names the file or option and the line. `dump_yaml` writes
what this reader reads back: a value shared by two keys is written twice, never as an alias.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from equimod_zoo.errors import UserError
from equimod_zoo.limits import MAX_YAML_BYTES, MAX_YAML_DEPTH, check_limit


class _Refused(yaml.composer.ComposerError):
    """Valid YAML that this reader does not accept."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(None, None, problem, mark)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader (plain data only) without anchors, aliases or tags, and with bounded nesting."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused("anchors and aliases (&name, *name) are not accepted", event.start_mark)
        if getattr(event, "tag", None) is not None:
            raise _Refused(f"the tag {event.tag} is not accepted (plain data only)", event.start_mark)
        if self._depth >= MAX_YAML_DEPTH:
            raise _Refused(f"nested deeper than the limit of {MAX_YAML_DEPTH} levels", event.start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml(text: str, *, where: str) -> Any:
    """Plain data (mappings, lists, strings, numbers, booleans, null) from YAML `text`.

    Args:
        where: the file or option the text came from, named in errors.
    """
    check_limit(where, len(text.encode("utf-8", "surrogateescape")), MAX_YAML_BYTES, unit="bytes")
    loader = _StrictLoader(text)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        at = f", line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(error.problem or error.context or "").split())
        what = "" if isinstance(error, _Refused) else "not valid YAML: "
        raise UserError(f"{where}{at}: {what}{problem}") from None
    except yaml.YAMLError as error:  # a reader error: bytes that are not text
        raise UserError(f"{where}: not valid YAML ({' '.join(str(error).split())})") from None
    finally:
        loader.dispose()


def load_yaml_file(path: str | os.PathLike[str]) -> Any:
    """`load_yaml` of a UTF-8 file, whose size is checked before it is read."""
    path = Path(path)
    with open(path, "rb") as handle:
        data = handle.read(MAX_YAML_BYTES + 1)
    check_limit(str(path), len(data), MAX_YAML_BYTES, unit="bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    return load_yaml(text, where=str(path))


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_yaml(data: Any, **options: Any) -> str:
    """`yaml.safe_dump` without anchors or aliases, so `load_yaml` reads it back (options: sort_keys, width...)."""
    return yaml.dump(data, Dumper=_NoAliasDumper, **options)
