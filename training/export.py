"""A training run's backbone as a model folder: RUN/model/ (model.safetensors, config.json, heads).

The folder is the one `equimod_zoo.load(RUN)` and `timm.create_model("local-dir:RUN/model")` read:
the headless backbone with timm key names, and a config.json whose `pretrained_cfg` (mean, std,
input size, interpolation, crop) is the data config the backbone was trained with, and whose
`equimod` metadata says how (method, recipe, epochs, steps, data, commit, the time budget). The
run's recipe.yaml and log.csv go with it. It is built in a staging folder and renamed into place
(`equimod_zoo.atomic`), so a model folder that exists is always complete.
"""
from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch

from equimod_zoo.atomic import move_into_place, staging_dir
from equimod_zoo.constants import CONFIG_FILE, HEADS_FILE, WEIGHTS_FILE
from equimod_zoo.method import Method
from equimod_zoo.model_folder import ModelConfig, default_pretrained_cfg, write_model_folder
from equimod_zoo.model_metadata import Compute, Cycle, ModelMetadata, TrainingData
from equimod_zoo.output_folder import OutputLayout, check_output_folder
from equimod_zoo.run_folder import TRAINING_RECORD, WRITTEN_BY, RunFolder, is_run_folder
from equimod_zoo.training.checkpoint import load_checkpoint
from equimod_zoo.training.cycles import cycle_record
from equimod_zoo.training.methods import SSLMethod, build_method
from equimod_zoo.training.recipe import Recipe, recipe_from_dict


def pretrained_cfg_for(recipe: Recipe) -> dict[str, Any]:
    """timm's data config matching the recipe: its resolution, normalisation, interpolation and crop."""
    return default_pretrained_cfg(
        recipe.arch,
        input_size=[3, recipe.eval_size, recipe.eval_size],
        mean=list(recipe.augment.mean),
        std=list(recipe.augment.std),
        interpolation=recipe.interpolation,
        crop_pct=recipe.eval_crop_pct,
        crop_mode="center",
    )


def source_commit() -> str | None:
    """The git commit of this source tree, or None outside a git checkout."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                                capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def compute_record(state: dict[str, Any], epochs_completed: int) -> Compute | None:
    """What the run cost: the hardware and the training loop's wall time in total and per epoch."""
    if "train_seconds" not in state:
        return None  # a checkpoint from before compute was recorded
    seconds = float(state["train_seconds"])
    return Compute(hardware=state.get("hardware"), train_seconds=round(seconds, 1),
                   seconds_per_epoch=round(seconds / epochs_completed, 2) if epochs_completed else None)


@dataclass(frozen=True)
class Budget:
    """A time-budgeted cycle's budget and the steps fitted to it (training/budget.py)."""

    seconds: float
    planned_steps: int


# What `export_checkpoint(..., out=DIR)` writes, and how an earlier one is known (config.json says "train").
MODEL_LAYOUT = OutputLayout("train export", frozenset({CONFIG_FILE, WEIGHTS_FILE, HEADS_FILE, *TRAINING_RECORD}),
                            lambda folder: _written_by(folder) == WRITTEN_BY)


def export_run(out: str | Path, method: SSLMethod, recipe: Recipe, *, data: dict[str, Any], epochs_completed: int,
               steps: int, compute: Compute | None = None, history: Sequence[Cycle | Mapping[str, Any]] = (),
               init_from_sha256: str | None = None, budget: Budget | None = None,
               record_from: str | Path | None = None) -> ModelConfig:
    """Write `method`'s backbone and heads as the model folder `out`, staged beside it and renamed into place.

    `history` holds the cycles of the model this run started from (`--init-from`, whose weights
    had `init_from_sha256`); `epochs` and `steps` are totals over every cycle, this run's last.
    `record_from` is the run folder whose recipe.yaml and log.csv go with the weights.
    """
    out = Path(out)
    with staging_dir(out) as stage:
        config = write_model(stage, method, recipe, data=data, epochs_completed=epochs_completed, steps=steps,
                             compute=compute, history=history, init_from_sha256=init_from_sha256, budget=budget)
        for name in TRAINING_RECORD if record_from is not None else ():
            if (Path(record_from) / name).is_file():
                shutil.copyfile(Path(record_from) / name, stage / name)
        move_into_place(stage, out)
    return config


def write_model(folder: Path, method: SSLMethod, recipe: Recipe, *, data: dict[str, Any], epochs_completed: int,
                steps: int, compute: Compute | None = None, history: Sequence[Cycle | Mapping[str, Any]] = (),
                init_from_sha256: str | None = None, budget: Budget | None = None) -> ModelConfig:
    """The model folder's files, written into `folder` as they are (`export_run` stages them)."""
    # a checkpoint stores the cycles it continues as plain dicts (weights_only=True reads no classes)
    earlier = tuple(c if isinstance(c, Cycle) else Cycle(**c) for c in history)
    cycles = (*earlier, cycle_record(recipe=recipe.name, epochs=epochs_completed, steps=steps, compute=compute,
                                     init_from_sha256=init_from_sha256,
                                     time_budget_seconds=budget.seconds if budget else None,
                                     planned_steps=budget.planned_steps if budget else None))
    metadata = ModelMetadata(
        method=Method.parse(recipe.method.name),
        recipe=recipe.name,
        recipe_config=recipe.to_dict(),
        epochs=sum(cycle.epochs or 0 for cycle in cycles),
        steps=sum(cycle.steps or 0 for cycle in cycles),
        cycles=cycles,
        batch_size=recipe.batch_size,
        seed=recipe.seed,
        data=TrainingData(**data),
        compute=compute,
        source_commit=source_commit(),
        heads=method.heads_schema(recipe.augment.params).to_dict(),
        written_by=WRITTEN_BY,
    )
    return write_model_folder(
        folder,
        method.backbone,
        arch=recipe.arch,
        model_args=recipe.model_args,
        heads=method.heads_state_dict(),
        equimod=metadata,
        pretrained_cfg=pretrained_cfg_for(recipe),
    )


def build_backbone(recipe: Recipe) -> torch.nn.Module:
    """The recipe's headless timm backbone, randomly initialised."""
    import equimod_zoo.architectures  # noqa: F401  (registers the CIFAR-stem ResNets with timm)

    return timm.create_model(recipe.arch, pretrained=False, num_classes=0, **recipe.model_args)


def method_from_checkpoint(payload: dict[str, Any]) -> tuple[SSLMethod, Recipe]:
    """Rebuild the trained method (backbone and heads) from a loaded checkpoint."""
    recipe = recipe_from_dict(payload["recipe"], source="checkpoint")
    stats = {"param_mean": payload["param_mean"], "param_std": payload["param_std"]} if recipe.method.equimod else {}
    method = build_method(recipe.method, build_backbone(recipe), **stats)
    method.load_state_dict(payload["method"])
    return method, recipe


def export_checkpoint(checkpoint: str | Path, out: str | Path | None = None) -> ModelConfig:
    """Export a run's checkpoint.pt (or a run folder holding one) as a model folder: the run's own RUN/model
    by default, else `out` (new, empty, or an earlier such export)."""
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        checkpoint = RunFolder(checkpoint).checkpoint
    run = checkpoint.parent
    if out is not None:
        check_output_folder(out, MODEL_LAYOUT, sources=[run], option="out")
    payload = load_checkpoint(checkpoint)
    method, recipe = method_from_checkpoint(payload)
    state = payload["state"]
    plan = state.get("plan")
    return export_run(out if out is not None else RunFolder(run).model, method, recipe, data=payload["data"],
                      epochs_completed=state["epochs_completed"], steps=state["step"],
                      compute=compute_record(state, state["epochs_completed"]), history=state.get("history", ()),
                      init_from_sha256=state.get("init_from_sha256"),
                      budget=Budget(plan["budget_seconds"], plan["total_steps"]) if plan else None,
                      record_from=run if is_run_folder(run) else None)


def _written_by(folder: Path) -> str | None:
    try:
        return ModelConfig.read(folder).equimod.written_by
    except Exception:  # not a model folder of ours: not an earlier export either
        return None
