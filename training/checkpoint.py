"""Resumable training checkpoints: RUN/checkpoint.pt, written atomically, read with weights_only=True.

A checkpoint holds plain tensors and containers only: the method's state (backbone, heads, BYOL
target), the optimiser and AMP scaler, the position (epoch, step in epoch, global step), every
random state the next step depends on (torch CPU and CUDA, the augmentation generator), the
parameter standardisation statistics and the resolved recipe. Resuming from it continues the run
exactly: the next loss equals the one an uninterrupted run computes.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from equimod_zoo.atomic import atomic_path
from equimod_zoo.errors import UserError

FORMAT_VERSION = 1


@dataclass
class TrainingState:
    """Where a run is: the next step to run is `step` (global), i.e. batch `step_in_epoch` of `epoch`."""

    epoch: int = 0
    step_in_epoch: int = 0
    step: int = 0
    epochs_completed: int = 0
    last_loss: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(path: str | Path, *, state: TrainingState, method: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
                    rng_states: list[dict[str, Any]], param_mean: torch.Tensor, param_std: torch.Tensor,
                    recipe: dict[str, Any], data: dict[str, Any]) -> None:
    """Write the checkpoint atomically: an interrupted write never replaces the previous one."""
    payload = {
        "format_version": FORMAT_VERSION,
        "state": {
            "epoch": state.epoch,
            "step_in_epoch": state.step_in_epoch,
            "step": state.step,
            "epochs_completed": state.epochs_completed,
            "last_loss": state.last_loss,
            **state.extra,
        },
        "method": _cpu(method.state_dict()),
        "optimizer": _cpu(optimizer.state_dict()),
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "rng": rng_states,
        "param_mean": param_mean.detach().cpu(),
        "param_std": param_std.detach().cpu(),
        "recipe": recipe,
        "data": data,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def remove_debris(folder: str | Path) -> list[Path]:
    """Delete the temporary files a killed process left in a run folder; returns what it removed.

    Every output of a run is written through `equimod_zoo.atomic` as `.NAME.XXXXXXXX.tmp` beside
    NAME and renamed at the end; kill -9 in between leaves the temporary file (a checkpoint's is
    ~100 MB). One run owns its folder, so any such file a new attempt finds is a dead one's.
    """
    removed = []
    for path in Path(folder).glob(".*.tmp"):
        if path.is_file():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint (weights_only=True: plain tensors and containers, never pickled code)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint to resume from")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file
        raise UserError(f"{path}: not a readable training checkpoint ({error})") from None
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path}: not an equimod-zoo training checkpoint (format {FORMAT_VERSION})")
    return payload


def training_state(payload: dict[str, Any]) -> TrainingState:
    known = {"epoch", "step_in_epoch", "step", "epochs_completed", "last_loss"}
    saved = payload["state"]
    return TrainingState(**{k: saved[k] for k in known}, extra={k: v for k, v in saved.items() if k not in known})


def rng_state(augment_generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    """This process's random states: torch CPU, its CUDA device, and the augmentation generator."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "augment": augment_generator.get_state(),
        "augment_device": augment_generator.device.type,
    }


def restore_rng(state: dict[str, Any], augment_generator: torch.Generator, device: torch.device) -> None:
    """Put back one process's random states, as `rng_state` returned them."""
    if state["augment_device"] != augment_generator.device.type:
        raise UserError(f"the checkpoint's augmentations ran on {state['augment_device']}, this run's on "
                        f"{augment_generator.device.type}: resume on the same kind of device")
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    augment_generator.set_state(state["augment"])


def _cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cpu(v) for v in value)
    return value
