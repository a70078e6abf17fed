"""Warm-restart training cycles: a new run that starts from a trained model's backbone and heads.

`equimod-zoo train --recipe R --init-from MODEL --out RUN` runs a whole new cycle (its own
warm-up and cosine, fresh optimiser state, BYOL's target copied from the online network) from
the weights of MODEL, a zoo name or a model folder. Only a model of the recipe's own method,
architecture and heads can be continued; anything else is refused with one line.

The model a cycle exports records its history in config.json (`equimod.cycles`): one row per
cycle with its recipe, epochs, steps, hardware, seconds per epoch and the sha256 of the weights
it started from (None for the first), so "N epochs in K cycles" is read from the file.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from equimod_zoo.constants import HEADS_FILE
from equimod_zoo.equimod.heads_file import read_heads_schema, read_heads_state
from equimod_zoo.errors import UserError
from equimod_zoo.model_metadata import Compute, Cycle, ModelMetadata
from equimod_zoo.training.methods import SSLMethod
from equimod_zoo.training.recipe import Recipe
from equimod_zoo.weights import load_state_dict, locate_weights


@dataclass(frozen=True)
class SourceModel:
    """A trained model to continue: its verified weights, heads and training history."""

    name: str
    weights_sha256: str
    backbone: dict[str, torch.Tensor]
    heads: dict[str, torch.Tensor]
    history: tuple[Cycle, ...]


def load_source(name_or_path: str | Path, recipe: Recipe) -> SourceModel:
    """The model `name_or_path` (sha256 checked), refused unless `recipe` can continue it."""
    located = locate_weights(name_or_path)
    meta = located.config.equimod
    where = f"--init-from {name_or_path}"
    method = meta.method.name if meta.method else None
    if method != recipe.method.name:
        raise UserError(f"{where}: a {method or 'non-equimod-zoo'} model; recipe {recipe.name} trains "
                        f"{recipe.method.name}")
    if (located.config.architecture, _plain(located.config.model_args)) != (recipe.arch, _plain(recipe.model_args)):
        raise UserError(f"{where}: architecture {located.config.architecture} {located.config.model_args or ''}; "
                        f"recipe {recipe.name} trains {recipe.arch} {recipe.model_args or ''}".replace(" ;", ";"))
    heads_path = located.weights.parent / HEADS_FILE
    if not heads_path.is_file():
        raise UserError(f"{where}: no {HEADS_FILE} beside {located.weights.name}; a cycle continues the heads "
                        f"too (export the model with its heads)")
    heads = read_heads_state(heads_path)
    if recipe.method.equimod:
        names, wanted = read_heads_schema(heads_path.parent, heads).param_names, tuple(recipe.augment.params)
        if names != wanted:
            first = next((f"{a} vs {b}" for a, b in zip(names, wanted) if a != b), f"{len(names)} vs {len(wanted)}")
            raise UserError(f"{where}: g_t was trained on another augmentation parameter list than recipe "
                            f"{recipe.name}'s ({first})")
    return SourceModel(name=str(name_or_path), weights_sha256=located.sha256, backbone=load_state_dict(located),
                       heads=heads, history=cycles_of(meta))


def initialise_from(method: SSLMethod, source: SourceModel) -> None:
    """Copy `source`'s backbone and heads into `method`; BYOL's target becomes the online network.

    The heads must match the method's exactly (names and shapes): a different augmentation
    parameter list changes g_t's input and is refused, naming the first difference.
    """
    expected = method.heads_state_dict()
    where = f"--init-from {source.name}"
    for key in sorted(set(expected) | set(source.heads)):
        if key not in source.heads or key not in expected:
            side = "lacks" if key not in source.heads else "has an extra"
            raise UserError(f"{where}: its heads {side} {key}; it was trained with other heads or another "
                            f"augmentation parameter list than recipe {method.config.name}'s")
        if tuple(source.heads[key].shape) != tuple(expected[key].shape):
            raise UserError(f"{where}: head {key} is {tuple(source.heads[key].shape)}, the recipe's is "
                            f"{tuple(expected[key].shape)} (another augmentation parameter list or head size)")
    missing, unexpected = method.backbone.load_state_dict(source.backbone, strict=False)
    if missing or unexpected:
        raise UserError(f"{where}: backbone keys differ from the recipe's "
                        f"({(missing or unexpected)[0]} {'missing' if missing else 'unexpected'})")
    with torch.no_grad():
        for key, value in source.heads.items():
            _tensor_at(method, key).copy_(value)
    method.reset_target()


def _plain(value: Any) -> Any:
    """Tuples as lists, so that model_args read from JSON and from a recipe compare equal."""
    return json.loads(json.dumps(value))


def _tensor_at(method: SSLMethod, key: str) -> torch.Tensor:
    """The method's tensor behind a `heads_state_dict` key (projection.*, predictor.*, g_eq.*, ...)."""
    if key in ("param_mean", "param_std"):
        return getattr(method.equimod, key)
    prefix, _, rest = key.partition(".")
    module = getattr(method.equimod, prefix) if prefix in ("g_eq", "g_t", "u") else getattr(method, prefix)
    return module.state_dict(keep_vars=True)[rest]


def cycles_of(meta: ModelMetadata) -> tuple[Cycle, ...]:
    """A model's training cycles from its metadata (one cycle for a model from before cycles)."""
    if meta.cycles:
        return meta.cycles
    return (cycle_record(recipe=meta.recipe, epochs=meta.epochs, steps=meta.steps, compute=meta.compute,
                         init_from_sha256=None),)


def cycle_record(*, recipe: str | None, epochs: int | None, steps: int | None, compute: Compute | None,
                 init_from_sha256: str | None, time_budget_seconds: float | None = None,
                 planned_steps: int | None = None) -> Cycle:
    """One row of `equimod.cycles`."""
    compute = compute or Compute()
    return Cycle(recipe=recipe, epochs=epochs, steps=steps, hardware=compute.hardware,
                 seconds_per_epoch=compute.seconds_per_epoch, init_from_sha256=init_from_sha256,
                 time_budget_seconds=time_budget_seconds, planned_steps=planned_steps)
