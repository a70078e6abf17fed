"""`equimod-zoo neighbours`: query images against feature stores, one model each, in a contact sheet."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from equimod_zoo.cli.errors import check_device, user_errors
from equimod_zoo.cli.paths import nonempty_path
from equimod_zoo.errors import UserError


def neighbours_command(
    stores: List[Path] = typer.Argument(
        ..., metavar="STORES...", show_default=False,
        help="Feature stores (`equimod-zoo extract` --out folders) of the same images, one per model: one row each."),
    out: Path = typer.Option(..., "--out", parser=nonempty_path,
                             help="Output folder: neighbours.png, neighbours.json, indices/NAME/image.index."),
    images: Optional[List[str]] = typer.Option(
        None, "--images", help="Query images: a folder or image files (repeat for several)."),
    dataset: Optional[str] = typer.Option(
        None, "--dataset", help="The dataset the stores were extracted from (to show their rows); without --images, "
                                "the queries come from its --split too."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="A local copy of the --dataset named."),
    split: Optional[str] = typer.Option(None, "--split", help="The --dataset split the queries come from."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N query images."),
    spread: Optional[int] = typer.Option(None, "--spread", min=1,
                                         help="N query images spread evenly over the input (a split sorted by class "
                                              "gives N classes)."),
    k: int = typer.Option(8, "-k", "--k", min=1, help="Neighbours a query."),
    model: Optional[List[str]] = typer.Option(
        None, "--model", help="The model of each store, in order (a zoo name or model folder); default: the one its "
                              "extraction.json names."),
    thumbnail: int = typer.Option(64, "--thumbnail", min=1, help="Tile size in pixels."),
    palette: Optional[int] = typer.Option(None, "--palette", help="Save the sheet with N colours (2 to 256): "
                                                                  "a third of the bytes, for a document."),
    keep_self: bool = typer.Option(False, "--keep-self", help="Let a query that is in the gallery be its own "
                                                              "neighbour."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda ... (default: CUDA if available)."),
    precision: str = typer.Option("auto", "--precision",
                                  help="auto, fp32, bf16 or fp16: the one the stores were extracted with."),
) -> None:
    """Nearest neighbours of query images under each store's model, side by side in a PNG contact sheet."""
    from equimod_zoo.data.sources import FirstImages, ImageSource, evenly_spaced
    from equimod_zoo.data.spec import open_split, resolve_spec
    from equimod_zoo.data.streams import image_inputs
    from equimod_zoo.retrieval.neighbours import find_neighbours

    with user_errors():
        check_device(device)
        if limit is not None and spread is not None:
            raise UserError("give --limit N (the first N queries) or --spread N (N spread evenly), not both")
        if images is None and dataset is None:
            raise UserError("give the queries: --images PATH, or --dataset SPEC --split S")
        if dataset is None and (split or data_dir):
            raise UserError("--split and --data-dir go with --dataset")
        if images is not None and split:
            raise UserError("--split picks the queries from --dataset; with --images the queries are those images")
        spec = resolve_spec(dataset, data_dir=data_dir) if dataset is not None else None
        if images is not None:
            queries = image_inputs(images)
            if not isinstance(queries, ImageSource):
                raise UserError("--images: queries are a folder or image files, not list files or tar shards")
        else:
            queries = open_split(spec, split)
        if limit is not None:
            queries = FirstImages(queries, limit)
        if spread is not None:
            queries = evenly_spaced(queries, spread)
        result = find_neighbours(stores, queries, out=out, k=k, models=model or None, dataset=spec,
                                 thumbnail_size=thumbnail, palette=palette, exclude_self=not keep_self, device=device,
                                 precision=precision)
    console = Console()
    console.print(f"{k} neighbours of {len(result.queries)} queries under {len(result.models)} models -> "
                  f"{result.sheet} (indices in {result.out / 'indices'})", highlight=False, soft_wrap=True)
    if result.unreadable:
        console.print(f"[yellow]{len(result.unreadable)} images could not be opened[/yellow] (crossed tiles), e.g. "
                      f"{result.unreadable[0]}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Adds this module's commands to the CLI."""
    app.command("neighbours")(neighbours_command)
