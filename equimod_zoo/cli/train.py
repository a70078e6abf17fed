"""`equimod-zoo train`: pre-train a backbone with a recipe; one call to `equimod_zoo.training.trainer.train`."""
from __future__ import annotations

import signal
from pathlib import Path
from typing import Any, Optional

import typer

from equimod_zoo.cli.errors import check_device, err_console, user_errors
from equimod_zoo.cli.paths import nonempty_path


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
                                                                      "and heads: a zoo name or a model folder."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1... (default: the GPU if any)."),
    compile: Optional[str] = typer.Option(None, "--compile", help="torch.compile: off, model (forward and "
                                                                  "backward) or step (the whole training step); "
                                                                  "default: the recipe's."),
    workers: Optional[int] = typer.Option(None, "--workers", "--num-workers", help="DataLoader workers (default: the recipe's)."),
    data_limit: Optional[int] = typer.Option(None, "--data-limit", min=1, help="Train on the first N images only."),
    set_values: Optional[list[str]] = typer.Option(None, "--set", help="Override a recipe value, KEY=YAML (dotted "
                                                                       "keys, e.g. optim.warmup_epochs=0.1); "
                                                                       "repeatable."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Where decoded datasets are cached "
                                                                       "(default: $EQUIMOD_ZOO_CACHE or "
                                                                       "~/.cache/equimod_zoo)."),
) -> None:
    """Pre-train SimCLR, BYOL or EquiMod; under torchrun, on every GPU. Writes RUN/log.csv, tb/, checkpoint.pt
    and the exported model folder (RUN loads with `equimod_zoo.load(RUN)`)."""
    from equimod_zoo.training.trainer import train
    from equimod_zoo.errors import NonFiniteLossError

    with user_errors():
        check_device(device)  # a missing GPU or a typo: one line, before any work
        try:
            result = train(recipe, data=data, out=out, epochs=epochs, batch_size=batch_size, max_steps=max_steps,
                           seed=seed, resume=resume, init_from=init_from, device=device, compile=compile,
                           workers=workers,
                           cache_dir=cache_dir, data_limit=data_limit, overrides=_overrides(set_values or []))
        except NonFiniteLossError as error:
            err_console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=1) from None
    if result.interrupted:  # checkpointed, but not done: a scheduler must not read it as success
        typer.echo(f"stopped by SIGTERM at step {result.step}; continue with --resume --out {result.out}")
        raise typer.Exit(code=128 + signal.SIGTERM)
    elif result.finished:
        typer.echo(f"finished {result.epochs_completed} epochs ({result.step} steps); model folder: {result.out}")
    else:
        typer.echo(f"stopped at step {result.step} (--max-steps); continue with --resume --out {result.out}")


def _overrides(values: list[str]) -> dict[str, Any]:
    import yaml

    overrides = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint="--set")
        overrides[key] = yaml.safe_load(value)
    return overrides


def register(app: typer.Typer) -> None:
    """Adds this module's commands to the CLI."""
    app.command("train")(train_command)
