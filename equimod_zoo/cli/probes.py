"""`equimod-zoo linear`: the linear probe and the weighted kNN on extracted features."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from equimod_zoo.cli.errors import check_device, user_errors
from equimod_zoo.errors import UserError

if TYPE_CHECKING:
    from equimod_zoo.probes.frozen import FrozenProbeReport


def linear_command(
    train: Path = typer.Option(..., "--train", help="Features of the training images (an `equimod-zoo extract` --out folder)."),
    test: Path = typer.Option(..., "--test", help="Features of the test images."),
    val: Optional[Path] = typer.Option(None, "--val", help="Features of a validation split (default: 20 % of train, stratified)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the results to this JSON file."),
    record: Optional[Path] = typer.Option(None, "--record", help="Record top1 (linear) and knn_top1 (knn) in this records folder (never a model folder)."),
    dataset_name: Optional[str] = typer.Option(None, "--dataset-name", help="The dataset the results are recorded under (needed with --record)."),
    select_metric: str = typer.Option("top1", "--select-metric", help="What validation maximises: top1 or mean_per_class_accuracy."),
    k: int = typer.Option(200, "--k", min=1, help="kNN neighbours."),
    temperature: float = typer.Option(0.1, "--temperature", min=1e-6, help="kNN temperature."),
    seed: int = typer.Option(0, "--seed", help="Seed of the held-out validation split."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda ... (default: CUDA if available)."),
) -> None:
    """Linear probe (L-BFGS, L2 chosen on validation) and weighted kNN (k=200, T=0.1) on frozen features."""
    with user_errors():  # mistakes in the arguments first, before anything heavy is imported
        if record is not None and not dataset_name:
            raise UserError("--record needs --dataset-name (e.g. cifar10), the dataset the results belong to")
    from equimod_zoo.probes.frozen import probe_feature_folders

    with user_errors():
        check_device(device)  # a missing GPU or a typo: one line, before any work
        report = probe_feature_folders(train, test, val=val, select_metric=select_metric, k=k,
                                       temperature=temperature, seed=seed, device=device, record=record,
                                       dataset_name=dataset_name, json_path=json_out)

    console = Console()
    console.print(results_table(report))
    if json_out is not None:
        console.print(f"results -> {json_out}", highlight=False)
    if record is not None:
        console.print(f"recorded into {record}", highlight=False)


def results_table(report: FrozenProbeReport) -> Table:
    """The probes' scores, then the settings each chose, in a table that fits 80 columns."""
    lin, knn = report.linear, report.knn
    table = Table(title=f"frozen features of {report.model}", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
    for column in ("probe", "top-1", "top-5", "mean per-class", "settings"):
        table.add_column(column, justify="left" if column in ("probe", "settings") else "right",
                         no_wrap=column != "settings")
    table.add_row("linear", f"{lin.top1:.2f}", f"{lin.top5:.2f}", f"{lin.mean_per_class_accuracy:.2f}",
                  f"weight decay {lin.weight_decay:.2g}, fit on {lin.train_size}, chosen on {lin.val_size}")
    table.add_row("kNN", f"{knn.top1:.2f}", f"{knn.top5:.2f}", f"{knn.mean_per_class_accuracy:.2f}",
                  f"k={knn.k}, T={knn.temperature:g}")
    return table


def register(app: typer.Typer) -> None:
    """Adds this module's commands to the CLI."""
    app.command("linear")(linear_command)
