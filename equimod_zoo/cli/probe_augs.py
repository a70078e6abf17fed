"""`equimod-zoo probe-augs`: what frozen features keep of each augmentation parameter (and EquiMod's eq-gain)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from equimod_zoo.cli.errors import check_device, user_errors
from equimod_zoo.cli.paths import nonempty_path
from equimod_zoo.errors import UserError


def probe_augs_command(
    model: Optional[str] = typer.Option(None, "--model", help="A zoo name or alias, or a local model folder."),
    models: Optional[str] = typer.Option(None, "--models", help="Several models, comma-separated, compared side by side."),
    dataset: str = typer.Option("cifar10", "--dataset", help="The dataset's name (cifar10, flowers102, ...); "
                                "without --data-dir, a parquet file or folder, imagefolder tree or Hub id."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", parser=nonempty_path, help="A local copy of the dataset, e.g. $EQUIMOD_DATA/cifar10-jpeg."),
    split: str = typer.Option("test", "--split", help="The split the images come from (held-out images by default)."),
    num_images: int = typer.Option(2000, "--num-images", min=10, help="Images probed (60/20/20 train/val/test by image)."),
    resolution: Optional[int] = typer.Option(None, "--resolution", min=1, help="Crop size (default: the model's own)."),
    augmentations_per_image: int = typer.Option(2, "--augs-per-image", min=1,
                                                help="Augmented views per image, alternating the recipe's two views."),
    views: str = typer.Option("both", "--views", help="Which of the recipe's views to sample: both, 1 or 2."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the report (a list of reports with --models)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the bar plot (PNG)."),
    seed: int = typer.Option(0, "--seed"),
    batch_size: int = typer.Option(256, "--batch-size", min=2),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=10, help="Bootstrap resamples for the 95 % intervals."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda ... (default: CUDA if available)."),
) -> None:
    """Held-out linear probes of the model pipeline's augmentation parameters (up to 18) from frozen features (R² / balanced accuracy)."""
    console = Console()
    with user_errors():
        # mistakes in the arguments first, before anything heavy is imported
        if (model is None) == (models is None):
            raise UserError("give exactly one of --model NAME or --models A,B")
        names = [model] if model is not None else [name.strip() for name in models.split(",") if name.strip()]
        if not names:
            raise UserError("--models: no model names")
        view_choice = {"both": None, "1": (0,), "2": (1,)}
        if views not in view_choice:
            raise UserError(f"--views must be both, 1 or 2, got {views!r}")
        from equimod_zoo.sensitivity.plot import plot_sensitivity
        from equimod_zoo.sensitivity.run import probe_augmentations, write_reports

        check_device(device)  # a missing GPU or a typo: one line, before any work
        reports = []
        for name in names:
            reports.append(probe_augmentations(
                dataset, model=name, data_dir=data_dir, split=split, num_images=num_images, resolution=resolution,
                augmentations_per_image=augmentations_per_image, views=view_choice[views], seed=seed,
                batch_size=batch_size, num_bootstrap=bootstrap, device=device))
            _print_report(console, reports[-1])
        if json_out is not None:
            write_reports(reports[0] if model is not None else reports, json_out)
            console.print(f"report -> {json_out}", highlight=False)
        if plot is not None:
            plot_sensitivity(reports, plot)
            console.print(f"plot -> {plot}", highlight=False)


def _print_report(console: Console, report: dict) -> None:
    console.print(report_table(report))
    eq = report["equivariance"]
    if eq is not None:
        console.print(f"eq-gain {eq['eq_gain']:+.4f} (cos predicted {eq['cos_predicted']:.4f}, invariant "
                      f"{eq['cos_invariant']:.4f}); retrieval top-1 in batches of {eq['retrieval_batch_size']}: "
                      f"{eq['retrieval_top1']:.4f} (invariant {eq['retrieval_top1_invariant']:.4f})", highlight=False)


# How the table names each metric: short, so that a row fits 80 columns with both intervals.
METRIC_TITLES = {"r2": "R²", "balanced_accuracy": "bal. acc."}


def report_table(report: dict) -> Table:
    """One row per parameter: its metric, then `score [95 % interval]` for each input kind, each cell
    on one line (the table fits 80 columns)."""
    table = Table(title=f"{report['model']} on {report['dataset']} ({report['num_images']} images, "
                        f"{report['resolution']} px): held-out score [95 % interval]",
                  box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
    table.add_column("parameter", no_wrap=True)
    table.add_column("metric", no_wrap=True)
    for kind in report["inputs"]:
        table.add_column(kind, justify="right", no_wrap=True)
    first = next(iter(report["inputs"].values()))
    for name, score in first.items():
        cells = []
        for kind in report["inputs"]:
            s = report["inputs"][kind][name]
            cells.append("n/a" if s["value"] is None else f"{s['value']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]")
        table.add_row(name, METRIC_TITLES.get(score["metric"], score["metric"]), *cells)
    return table


def register(app: typer.Typer) -> None:
    """Adds this module's commands to the CLI."""
    app.command("probe-augs")(probe_augs_command)
