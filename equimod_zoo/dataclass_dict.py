"""Dataclasses to and from plain containers (YAML, JSON), checking every key and type.

Recipes (training/recipe.py) and the augmentation pipeline recorded in a model's config.json
(`equimod_zoo.equimod.augment.AugmentConfig.from_dict`) are both read with `build_dataclass`, so
a key or type error reads the same wherever it comes from: the source and the dotted key.
A value type that is stored as a plain value rather than a mapping (a `Method`, stored as its
name) says so with a `from_plain` classmethod and a `to_plain` method.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

from equimod_zoo.errors import UserError


def build_dataclass(cls: type, data: Mapping[str, Any], *, source: str, prefix: str = "") -> Any:
    """Instantiate dataclass `cls` from `data`, recursing into nested dataclass fields."""
    return _build(cls, data, source=source, prefix=prefix)


def plain(value: Any) -> Any:
    """Tuples to lists and dataclasses to dicts, recursively: what YAML, JSON and
    `torch.load(weights_only=True)` all read."""
    return _plain(value)


def _build(cls: type, data: Mapping[str, Any], *, source: str, prefix: str) -> Any:
    """Instantiate dataclass `cls` from `data`, recursing into nested dataclass fields."""
    if not isinstance(data, Mapping):
        raise UserError(f"{source}: {prefix.rstrip('.') or 'recipe'} must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UserError(f"{source}: unknown key {prefix}{unknown[0]} (known in this section: {', '.join(fields)})")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _coerce(hints[name], value, source=source, key=f"{prefix}{name}") for name, value in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as error:  # a missing required field
        raise UserError(f"{source}: {prefix.rstrip('.') or 'recipe'}: {error}") from None


def _coerce(hint: Any, value: Any, *, source: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(options[0], value, source=source, key=key) if len(options) == 1 else value
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise UserError(f"{source}: {key} must be one of {', '.join(map(str, typing.get_args(hint)))}, "
                            f"got {value!r}")
        return value
    if isinstance(hint, type) and hasattr(hint, "from_plain"):
        try:
            return hint.from_plain(value)
        except UserError as error:
            raise UserError(f"{source}: {key}: {error}") from None
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, source=source, prefix=f"{key}.")
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise UserError(f"{source}: {key} must be a mapping, got {value!r}")
        return dict(value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{source}: {key} must be a list, got {value!r}")
        args = typing.get_args(hint)
        item = args[0] if args else Any
        return tuple(_coerce(item, v, source=source, key=key) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"{source}: {key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{source}: {key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{source}: {key} must be a number, got {value!r}")
        return float(value)
    if hint is str and not isinstance(value, str):
        raise UserError(f"{source}: {key} must be a string, got {value!r}")
    return value


def _plain(value: Any) -> Any:
    if hasattr(value, "to_plain"):
        return value.to_plain()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
