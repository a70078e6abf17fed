"""`equimod-zoo list` and `equimod-zoo info`: browse the catalogue."""
from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from equimod_zoo.cli.errors import user_errors
from equimod_zoo.registry import ZooEntry, catalogue


def entry_summary(entry: ZooEntry) -> dict:
    """The JSON form of an entry, with every name that resolves to it."""
    return {**entry.to_dict(), "aliases": catalogue().aliases_of(entry)}


def list_command(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
) -> None:
    """List the zoo's models, their status and measured metrics."""
    entries = catalogue().entries
    if as_json:
        typer.echo(json.dumps([entry_summary(e) for e in entries], indent=2))
        return
    table = Table(title="equimod-zoo models")
    for column in ("name", "arch", "method", "data", "epochs", "status", "metrics"):
        table.add_column(column)
    for e in entries:
        metrics = ", ".join(f"{m.dataset} {m.protocol} {m.name} {m.value:.2f}" for m in e.metrics) or "-"
        table.add_row(e.name, e.arch, e.method, e.data, str(e.epochs), e.status, metrics)
    Console().print(table)


def info_command(name: str = typer.Argument(..., help="A zoo name, alias or arch.tag.")) -> None:
    """Show everything the registry knows about one model."""
    with user_errors():
        entry = catalogue().get(name)
    typer.echo(json.dumps(entry_summary(entry), indent=2))


def register(app: typer.Typer) -> None:
    app.command("list")(list_command)
    app.command("info")(info_command)
