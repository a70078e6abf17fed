"""`equimod-zoo transfer` and `equimod-zoo compare`: transfer learning with official splits and metrics."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from equimod_zoo.cli.errors import check_device, user_errors
from equimod_zoo.cli.paths import nonempty_path
from equimod_zoo.cli.network import offline_unless_reachable
from equimod_zoo.constants import DEFAULT_MODEL


def transfer_command(
    dataset: str = typer.Option(..., "--dataset", help="flowers102, cub200, cifar10, cifar100, pets, dtd, food101, "
                                                       "caltech101, stl10, hf:OWNER/NAME or imagefolder:DIR."),
    model: Optional[str] = typer.Option(
        None, "--model", help=f"A zoo name or alias, or a local model folder (default: {DEFAULT_MODEL}, the embedded "
                              f"default)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", parser=nonempty_path, help="A local copy (parquet, CUB_200_2011 or "
                                                                     "imagefolder layout); default: the Hub, or its "
                                                                     "cache when offline."),
    protocol: str = typer.Option("linear", "--protocol", help="linear, knn or finetune."),
    resolution: Optional[int] = typer.Option(None, "--resolution", min=1, help="Input size (default: the model's own, at least 64 px)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the result to this JSON file."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Feature and result cache (default: "
                                                                       "$EQUIMOD_ZOO_CACHE or ~/.cache/equimod_zoo)."),
    image_column: Optional[str] = typer.Option(None, "--image-column", help="The dataset's image column."),
    label_column: Optional[str] = typer.Option(None, "--label-column", help="The dataset's label column."),
    record: Optional[Path] = typer.Option(None, "--record", help="Record the score in this records folder (never a model folder)."),
    epochs: int = typer.Option(10, "--epochs", min=1, help="finetune: epochs."),
    lr: float = typer.Option(0.01, "--lr", min=0.0, help="finetune: learning rate at batch 256."),
    optimizer: str = typer.Option("sgd", "--optimizer", help="finetune: sgd or adamw."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="A quick look: at most N images of each split, "
                                        "evenly spaced over it."),
    workers: int = typer.Option(2, "--workers", "--num-workers", min=0, help="Processes that decode images."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda ... (default: CUDA if available)."),
    precision: str = typer.Option("fp32", "--precision", help="Of the extracted features: fp32 gives the same "
                                  "score on every machine; auto, bf16 or fp16 extract faster where the hardware "
                                  "has them, and move a score by tenths."),
) -> None:
    """Transfer a backbone to a dataset: frozen linear probe (default), kNN, or fine-tuning."""
    from equimod_zoo.transfer.finetune import FinetuneConfig
    from equimod_zoo.transfer.run import transfer

    console = Console()
    if model is None:
        model = DEFAULT_MODEL
        console.print(f"model: {model} (the embedded default; --model to choose)", highlight=False)
    hint = (f"it is not in the Hugging Face cache either; download it on a connected machine (that cache works "
            f"here), or point --data-dir at a local copy (parquet, CUB_200_2011 or imagefolder layout): "
            f"--dataset {dataset} --data-dir DIR")
    with user_errors(network_hint=hint):
        check_device(device)  # a missing GPU or a typo: one line, before any work
        if data_dir is None and not dataset.startswith("imagefolder:"):
            offline_unless_reachable()  # from the cache at once, or one line in seconds, when the Hub is unreachable
        result = transfer(
            dataset, model=model, data_dir=data_dir, protocol=protocol, resolution=resolution, cache_dir=cache_dir,
            image_column=image_column, label_column=label_column, batch_size=batch_size, num_workers=workers,
            device=device, finetune_config=FinetuneConfig(epochs=epochs, lr=lr, optimizer=optimizer,
                                                          batch_size=batch_size, num_workers=workers),
            limit=limit, record=record, json_path=json_out, precision=precision,
        )

    table = Table(title=f"{result.model} on {result.dataset} ({result.protocol}, {result.resolution} px, "
                        f"{result.precision} features)")
    for column in ("metric", "score"):
        table.add_column(column, justify="right" if column == "score" else "left")
    table.add_row(f"[bold]{result.metric}[/bold]", f"[bold]{result.score:.2f}[/bold]")
    for name, value in result.scores.items():
        if name != result.metric:
            table.add_row(name, f"{value:.2f}")
    console.print(table)
    sizes = ", ".join(f"{k} {v}" for k, v in result.split_sizes.items())
    chosen = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                       for k, v in result.hyperparameters.items() if not isinstance(v, (dict, list)))
    console.print(f"splits: {sizes}; {chosen}; features cached for: {', '.join(result.cached_splits) or 'none'}; "
                  f"{result.seconds:.1f} s", highlight=False, soft_wrap=True)
    if json_out is not None:
        console.print(f"result -> {json_out}", highlight=False)


def compare_command(
    models: str = typer.Option(..., "--models", help="Comma-separated zoo names or model folders."),
    datasets: str = typer.Option(..., "--datasets", help="Comma-separated datasets (as for transfer --dataset)."),
    out: Path = typer.Option(..., "--out", help="Folder for comparison.md, comparison.csv and comparison.png."),
    data_dir_map: Optional[str] = typer.Option(None, "--data-dir-map", help="DATASET=DIR,... local copies."),
    protocol: str = typer.Option("linear", "--protocol", help="linear, knn or finetune."),
    resolution: Optional[int] = typer.Option(None, "--resolution", min=1, help="Input size (default: each model's own, at least 64 px)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Feature and result cache."),
    rerun: bool = typer.Option(False, "--rerun", help="Measure again instead of reusing cached results."),
    workers: int = typer.Option(2, "--workers", "--num-workers", min=0, help="Processes that decode images."),
    device: Optional[str] = typer.Option(None, "--device"),
    probes: Optional[str] = typer.Option(None, "--probes", help="Comma-separated `probe-augs --json` files to "
                                         "add as probes.md and probes.png."),
) -> None:
    """Compare models across datasets: a markdown table, a CSV and a bar chart, EquiMod beside its baseline."""
    from equimod_zoo.transfer.compare import compare, parse_data_dir_map, split_list

    with user_errors():
        check_device(device)  # a missing GPU or a typo: one line, before any work
        report = compare(split_list(models, "--models"), split_list(datasets, "--datasets"), out=out,
                         data_dirs=parse_data_dir_map(data_dir_map), protocol=protocol, resolution=resolution,
                         cache_dir=cache_dir, reuse=not rerun, num_workers=workers, device=device,
                         probe_reports=split_list(probes, "--probes") if probes else ())
    console = Console()
    console.print(report.markdown, markup=False, highlight=False, soft_wrap=True)
    written = [report.markdown_path, report.csv_path, report.png_path, report.probes_path, report.probes_png_path]
    console.print("-> " + ", ".join(str(p) for p in written if p), highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Adds this module's commands to the CLI."""
    app.command("transfer")(transfer_command)
    app.command("compare")(compare_command)
