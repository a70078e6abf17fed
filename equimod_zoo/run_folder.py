"""The training run folder: what `equimod-zoo train --out RUN` writes, and how a run is recognised.

    RUN/run.json        the marker: a run of `equimod-zoo train`; a time-budgeted run's fitted plan
    RUN/recipe.yaml     the resolved recipe
    RUN/log.csv         one row per logged step (and RUN/tb/, TensorBoard events, when installed)
    RUN/checkpoint.pt   the last checkpoint (atomic), what `--resume` and a rerun continue
    RUN/model/          the exported model folder (equimod_zoo/model_folder.py, plus recipe.yaml and
                        log.csv), written at every checkpoint: staged beside it and renamed into
                        place, so that a RUN/model that exists is always complete and loadable

`equimod_zoo.load(RUN)` reads RUN/model. The output-folder rule (`equimod_zoo.output_folder`)
lets training write only into a new or empty folder or an earlier run (`RUN_LAYOUT`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from equimod_zoo.atomic import atomic_write_text
from equimod_zoo.constants import (CHECKPOINT_FILE, CONFIG_FILE, LOG_FILE, MODEL_DIR, RECIPE_FILE, RUN_FILE,
                                   TENSORBOARD_DIR)
from equimod_zoo.errors import WeightsNotFoundError
from equimod_zoo.output_folder import OutputLayout

WRITTEN_BY = "train"  # run.json's `written_by`, and the exported config.json's `equimod.written_by`
# What travels from the run into its model folder beside the weights, so that the folder says how it was trained.
TRAINING_RECORD = (RECIPE_FILE, LOG_FILE)


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run folder."""

    root: Path

    @property
    def marker(self) -> Path:
        return self.root / RUN_FILE

    @property
    def recipe(self) -> Path:
        return self.root / RECIPE_FILE

    @property
    def log(self) -> Path:
        return self.root / LOG_FILE

    @property
    def tensorboard(self) -> Path:
        return self.root / TENSORBOARD_DIR

    @property
    def checkpoint(self) -> Path:
        return self.root / CHECKPOINT_FILE

    @property
    def model(self) -> Path:
        return self.root / MODEL_DIR

    def read_marker(self) -> dict[str, Any]:
        """run.json as written by `write_marker` (an empty dict when there is none or it is unreadable)."""
        try:
            data = json.loads(self.marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def write_marker(self, **fields: Any) -> None:
        atomic_write_text(self.marker, json.dumps({"written_by": WRITTEN_BY, **fields}, indent=2) + "\n")


def is_run_folder(path: str | Path) -> bool:
    """Whether `path` is a run of `equimod-zoo train`: its run.json says so, or (a run from before run.json)
    it holds a recipe.yaml and a checkpoint.pt."""
    run = RunFolder(Path(path))
    if not run.root.is_dir():
        return False
    if run.read_marker().get("written_by") == WRITTEN_BY:
        return True
    return run.recipe.is_file() and run.checkpoint.is_file()


RUN_LAYOUT = OutputLayout(
    "train",
    frozenset({RUN_FILE, RECIPE_FILE, LOG_FILE, TENSORBOARD_DIR, CHECKPOINT_FILE, MODEL_DIR}),
    is_run_folder,
)


def model_folder_of(path: Path) -> Path:
    """The model folder `path` names: RUN/model for a run folder, `path` itself for anything else."""
    if (path / CONFIG_FILE).is_file() or not is_run_folder(path):
        return path
    model = RunFolder(path).model
    if not (model / CONFIG_FILE).is_file():
        raise WeightsNotFoundError(f"{path}: a training run with no exported model yet (a run exports its model "
                                   f"at its first checkpoint); continue it with the command that started it")
    return model
