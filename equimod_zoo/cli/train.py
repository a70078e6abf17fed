"""`equimod-zoo train`: pre-train a backbone with a recipe; one call to `equimod_zoo.training.trainer.train`."""
from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any, Optional

import typer

from equimod_zoo.cli.errors import check_device, err_console, user_errors
from equimod_zoo.cli.paths import nonempty_path
from equimod_zoo.yaml_io import load_yaml


def train_command(
    recipe: Optional[str] = typer.Option(None, "--recipe", help="A recipe name (training/recipes/NAME.yaml) or a "
                                                                 "YAML file; optional with --resume."),
    data: str = typer.Option(..., "--data", help="A dataset spec: a parquet folder or file (e.g. "
                                                  "$EQUIMOD_DATA/cifar10-jpeg), an image folder, a CUB_200_2011 "
                                                  "folder, a known name (cifar10) or a Hugging Face dataset id."),
    out: Path = typer.Option(..., "--out", parser=nonempty_path,
                             help="The run folder: logs, checkpoint and the exported model."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Override the recipe's epochs."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Override the recipe's global batch size."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop after this many steps in total "
                                                                      "(resumable)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Override the recipe's seed."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its checkpoint."),
    init_from: Optional[str] = typer.Option(None, "--init-from", help="Start a new cycle (own warm-up and cosine, "
                                                                      "fresh optimiser) from this model's backbone "
                                                                      "and heads: a zoo name, a model folder or a "
                                                                      "run."),
    time_budget: Optional[str] = typer.Option(None, "--time-budget", help="Fit the run to this much time (60s, 9m, "
                                              "20h): training, its last checkpoint and its exported model all end "
                                              "inside it. Rerunning the same command continues the run."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1... (default: the GPU if any)."),
    compile: Optional[str] = typer.Option(None, "--compile", help="torch.compile: off, model (forward and "
                                                                  "backward) or step (the whole training step); "
                                                                  "default: the recipe's."),
    workers: Optional[int] = typer.Option(None, "--workers", "--num-workers", help="DataLoader workers (default: the recipe's)."),
    data_limit: Optional[int] = typer.Option(None, "--data-limit", min=1, help="Train on the first N images only."),
    tensorboard: Optional[bool] = typer.Option(None, "--tensorboard/--no-tensorboard",
                                               help="TensorBoard events in RUN/tb besides RUN/log.csv (default: "
                                                    "when tensorboard is installed)."),
    set_values: Optional[list[str]] = typer.Option(None, "--set", help="Override a recipe value, KEY=YAML (dotted "
                                                                       "keys, e.g. optim.warmup_epochs=0.1); "
                                                                       "repeatable."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Where decoded datasets are cached "
                                                                       "(default: $EQUIMOD_ZOO_CACHE or "
                                                                       "~/.cache/equimod_zoo)."),
    allow_outside_paths: bool = typer.Option(False, "--allow-outside-paths",
                                             help="Let the --data's rows name image files outside its folder."),
) -> None:
    """Pre-train SimCLR, BYOL or EquiMod; under torchrun, on every GPU. Writes RUN/log.csv (and tb/), checkpoint.pt
    and the exported model folder RUN/model at every checkpoint (RUN loads with `equimod_zoo.load(RUN)`)."""
    started = time.monotonic()  # a time budget counts from here, before the heavy imports
    from equimod_zoo.training.trainer import train
    from equimod_zoo.errors import NonFiniteLossError

    with user_errors():
        check_device(device)  # a missing GPU or a typo: one line, before any work
        try:
            if allow_outside_paths:  # the permission travels with the resolved spec
                from equimod_zoo.data.spec import resolve_spec

                data = resolve_spec(data, option="--data", allow_outside_paths=True)
            result = train(recipe, data=data, out=out, epochs=epochs, batch_size=batch_size, max_steps=max_steps,
                           seed=seed, resume=resume, init_from=init_from, time_budget=time_budget, started=started,
                           device=device, compile=compile, workers=workers,
                           cache_dir=cache_dir, data_limit=data_limit, overrides=_overrides(set_values or []),
                           tensorboard=tensorboard)
        except NonFiniteLossError as error:
            err_console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=1) from None
    again = "rerun the same command" if time_budget else f"--resume --out {result.out}"
    if result.stopped_by and result.stopped_by.endswith("during set-up"):
        typer.echo(f"stopped by {result.stopped_by}: nothing trained, nothing written; to start, {again}")
        if result.interrupted:
            raise typer.Exit(code=128 + signal.Signals[result.stopped_by.split()[0]])
        raise typer.Exit(code=3)
    model = f"{_count(result.epochs_completed, 'epoch')} ({_count(result.step, 'step')})"
    if result.planned_steps is not None:
        model += f" of the {_epochs(result.planned_steps, result.steps_per_epoch)} the time budget fits"
    if result.cycles > 1:
        model = (f"{_count(result.model_epochs, 'epoch')} ({_count(result.model_steps, 'step')}) over "
                 f"{result.cycles} cycles, this one {model}")
    if result.interrupted:  # checkpointed, but not done: a scheduler must not read it as success
        typer.echo(f"stopped by {result.stopped_by}: model folder {result.out} holds {model}; to continue, {again}")
        raise typer.Exit(code=128 + signal.Signals[result.stopped_by])
    elif result.finished:
        typer.echo(f"finished: model folder {result.out} holds {model}")
    else:
        typer.echo(f"stopped at step {result.step} ({result.stopped_by}): model folder {result.out} holds {model}; "
                   f"to continue, {again}")


def _epochs(steps: int, steps_per_epoch: int | None) -> str:
    if steps_per_epoch and steps % steps_per_epoch == 0:
        return f"{_count(steps // steps_per_epoch, 'epoch')} ({_count(steps, 'step')})"
    return _count(steps, "step")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _overrides(values: list[str]) -> dict[str, Any]:
    overrides = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint="--set")
        overrides[key] = load_yaml(value, where=f"--set {key}")
    return overrides


def register(app: typer.Typer) -> None:
    """Adds this module's commands to the CLI."""
    app.command("train")(train_command)
