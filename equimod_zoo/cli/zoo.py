"""`equimod-zoo list` and `equimod-zoo info`: browse the catalogue."""
from __future__ import annotations

import json
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from equimod_zoo.cli.errors import user_errors
from equimod_zoo.dataclass_dict import plain
from equimod_zoo.records import Record, transfer_settings
from equimod_zoo.registry import ZooEntry, catalogue, list_models

# The table's measured columns: (title, protocol, metric, dataset or None for the pre-training data).
MEASURED_COLUMNS = (("linear", "linear", "top1", None), ("kNN", "knn", "knn_top1", None),
                    ("Flowers", "linear", "mean_per_class_accuracy", "flowers102"))


def entry_summary(entry: ZooEntry) -> dict:
    """The JSON form of an entry, as `list_models()` gives it, with its `arch.tag` (which resolves to it too) and
    the numbers measured on its weights."""
    return {**entry.to_dict(), "arch_tag": entry.arch_tag, "metrics": [plain(m) for m in entry.metrics]}


def list_command(
    pattern: Optional[str] = typer.Argument(None, help="Only names matching this shell-style pattern, e.g. '*r18*'."),
    available: bool = typer.Option(False, "--available", "--pretrained", help="Only entries with trained weights."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
) -> None:
    """List the zoo's models, their status and measured metrics."""
    entries = list_models(pattern, pretrained=available)
    if as_json:
        typer.echo(json.dumps([entry_summary(e) for e in entries], indent=2))
        return
    # Narrow enough for 80 columns: the architecture, method and data are in each name; `info` has the rest.
    table = Table(title="equimod-zoo models", box=None, pad_edge=False, padding=(0, 1), collapse_padding=True,
                  header_style="bold underline")
    table.add_column("name", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("epochs", no_wrap=True, justify="right")
    for title, *_ in MEASURED_COLUMNS:
        table.add_column(title, no_wrap=True, justify="right")
    for e in entries:
        table.add_row(e.name, e.status, e.epochs_text, *(_measured(e, *column[1:]) for column in MEASURED_COLUMNS))
    console = Console()
    console.print(table)
    console.print("Accuracy in %: linear and kNN top-1 on the pre-training data's test split, Flowers-102 mean "
                  f"per-class (linear{_flowers_settings(entries)}). A recipe-only entry's epochs are planned, not "
                  "trained. `equimod-zoo info NAME` shows every recorded number with its command.", highlight=False)


def _flowers_settings(entries: list[ZooEntry]) -> str:
    """The settings the shown Flowers-102 numbers were measured with, from their recorded commands."""
    commands = [m.command for e in entries for m in e.metrics if m.dataset == "flowers102" and m.protocol == "linear"]
    return f", {transfer_settings(commands)}" if commands else ""


def _measured(entry: ZooEntry, protocol: str, name: str, dataset: str | None) -> str:
    wanted = dataset or entry.data
    metric: Record | None = next((m for m in entry.metrics if (m.protocol, m.metric, m.dataset) == (protocol, name,
                                                                                                      wanted)), None)
    return f"{metric.value:.2f}" if metric else "-"


def info_command(name: str = typer.Argument(..., help="A zoo name, alias or arch.tag.")) -> None:
    """Show everything the registry knows about one model."""
    with user_errors():
        entry = catalogue().get(name)
    typer.echo(json.dumps(entry_summary(entry), indent=2))


def register(app: typer.Typer) -> None:
    app.command("list")(list_command)
    app.command("info")(info_command)
