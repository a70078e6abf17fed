"""config.json's `equimod` block: how a model folder's weights were made, as typed data.

timm ignores the block; our readers get it as a `ModelMetadata`, read with the same strict
reader as the recipes (`build_dataclass`): an unknown key or a value of the wrong type is one
line naming config.json and the dotted key. A folder timm wrote itself has no block, which reads
as an empty `ModelMetadata`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from equimod_zoo.constants import METADATA_KEY
from equimod_zoo.dataclass_dict import build_dataclass, plain
from equimod_zoo.errors import UserError
from equimod_zoo.method import Method


@dataclass(frozen=True)
class TrainingData:
    """The pre-training data: its name, how it was read, its size and its content's sha256."""

    name: str
    description: str = ""
    num_images: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class Compute:
    """What training cost: the hardware and the training loop's wall time, in total and per epoch."""

    hardware: str | None = None
    train_seconds: float | None = None
    seconds_per_epoch: float | None = None


@dataclass(frozen=True)
class Cycle:
    """One training cycle (a run from scratch, or an `--init-from` continuation of the previous one)."""

    recipe: str | None = None
    epochs: int | None = None
    steps: int | None = None
    hardware: str | None = None
    seconds_per_epoch: float | None = None
    init_from_sha256: str | None = None  # the weights this cycle started from; None for the first
    time_budget_seconds: float | None = None  # `train --time-budget`: the budget the cycle's length was fitted to
    planned_steps: int | None = None  # ... and the steps fitted to it (`steps` is what was done)


@dataclass(frozen=True)
class ConvertedFrom:
    """The foreign checkpoint `equimod-zoo convert` read."""

    file: str
    format: str
    sha256: str


@dataclass(frozen=True)
class ModelMetadata:
    """Everything equimod-zoo records about a model folder's weights; every field is optional."""

    method: Method | None = None
    recipe: str | None = None
    recipe_config: dict[str, Any] | None = None  # the whole recipe, as training/recipe.py writes it
    epochs: int | None = None  # in total, over every cycle
    steps: int | None = None
    cycles: tuple[Cycle, ...] = ()
    batch_size: int | None = None
    seed: int | None = None
    data: TrainingData | None = None
    compute: Compute | None = None  # of the last cycle
    source_commit: str | None = None
    heads: dict[str, Any] | None = None  # the heads file's schema (equimod_zoo/equimod/heads_file.py)
    converted_from: ConvertedFrom | None = None
    weights_sha256: str | None = None
    hf_hub_id: str | None = None  # the Hub repository, once published
    written_by: str | None = None  # the command that wrote the folder: what --overwrite may replace

    @property
    def num_cycles(self) -> int:
        return len(self.cycles) or 1

    def replace(self, **changes: Any) -> ModelMetadata:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: unset fields left out."""
        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)
                if getattr(self, f.name) not in (None, ())}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str) -> ModelMetadata:
        if isinstance(data, Mapping) and data.get("results"):  # an older equimod-zoo wrote numbers here
            raise UserError(f"{source}: holds {METADATA_KEY}.results written into the model folder by an older "
                            "equimod-zoo; measured numbers now live in a records folder: re-measure with "
                            "`--record DIR` and export with `--records DIR`")
        return build_dataclass(cls, data, source=source, prefix=f"{METADATA_KEY}.")
