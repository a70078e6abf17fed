"""`equimod-zoo extract`: features of a folder of images or of a dataset, into a resumable store."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from equimod_zoo.cli.errors import user_errors
from equimod_zoo.cli.network import offline_unless_reachable
from equimod_zoo.cli.paths import nonempty_path
from equimod_zoo.constants import DEFAULT_MODEL, DEFAULT_SHARD_SIZE
from equimod_zoo.errors import UserError


def extract_command(
    more_images: Optional[List[str]] = typer.Argument(
        None, metavar="[IMAGES]...", show_default=False,
        help="More inputs, as for --images (so that an unquoted shards/{0..9}.tar, which the shell expands, works)."),
    out: Optional[Path] = typer.Option(
        None, "--out", parser=nonempty_path,
        help="Output folder (img_emb/, metadata/, failures.csv, extraction.json); reruns resume it. "
             "Default: features/SOURCE_MODEL in the working folder, e.g. features/photos_"
             f"{DEFAULT_MODEL}."),
    images: Optional[List[str]] = typer.Option(
        None, "--images", help="A folder (scanned recursively), image files, a list file (.txt: one path a line) or "
                               "webdataset tar shards (shards/{00000..00009}.tar); repeat for several."),
    dataset: Optional[str] = typer.Option(
        None, "--dataset", help="A dataset spec: a known name (flowers102, cifar10...), a parquet file or folder, "
                                "an imagefolder tree, a CUB_200_2011 folder, or a Hugging Face dataset id."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="A local copy of the --dataset named."),
    streaming: bool = typer.Option(False, "--streaming", help="Read the --dataset row by row (datasets' streaming "
                                   "mode): a large Hub split is never downloaded or listed whole."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N images: a quick look."),
    split: Optional[str] = typer.Option(None, "--split", help="Dataset split (e.g. train, test)."),
    image_column: Optional[str] = typer.Option(None, "--image-column", help="Dataset image column (default: the first Image feature)."),
    label_column: Optional[str] = typer.Option(None, "--label-column", help="Dataset label column (default: the first ClassLabel feature)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="A zoo name or alias, or a local model folder."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    workers: int = typer.Option(2, "--workers", "--num-workers", min=0,
                                help="Processes that decode images while the model runs."),
    normalize: bool = typer.Option(False, "--normalize", help="L2-normalise the features."),
    shard_size: int = typer.Option(DEFAULT_SHARD_SIZE, "--shard-size", min=1, help="Images per shard (the unit of resume)."),
    resolution: Optional[int] = typer.Option(None, "--resolution", min=1, help="Square input size instead of the model's own."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: CUDA if available)."),
    precision: str = typer.Option("auto", "--precision", help="auto, fp32, bf16 or fp16."),
    compile_model: Optional[bool] = typer.Option(
        None, "--compile/--no-compile", show_default="on a bf16 CPU from 512 images",
        help="torch.compile the model: faster on CPUs with AMX or AVX512-BF16, once there are enough images "
             "to pay for the compile."),
    jpeg_draft: bool = typer.Option(True, "--jpeg-draft/--no-jpeg-draft",
                                    help="Decode large JPEGs at a reduced scale that still exceeds the resize size."),
    allow_outside_paths: bool = typer.Option(False, "--allow-outside-paths",
                                             help="Let the --dataset's rows name image files outside its folder."),
) -> None:
    """Extract one pooled feature vector per image with a zoo backbone (or any timm model folder)."""
    with user_errors():  # mistakes in the arguments first, before anything heavy is imported
        if (images is None and not more_images) == (dataset is None):
            raise UserError("give exactly one of --images DIR or --dataset SPEC")
    from equimod_zoo.extraction.distributed import extract_features_distributed
    from equimod_zoo.torchrun import is_main_rank

    with user_errors(network_hint="download the dataset on a connected machine (its Hugging Face cache works "
                                  "here), or pass a local copy: --dataset DIR (parquet, imagefolder or CUB_200_2011)"):
        if dataset is not None and data_dir is None and not Path(dataset).exists():
            offline_unless_reachable()  # a Hub dataset: seconds, not a minute of retries, when offline
        summary = extract_features_distributed(  # plain extract_features outside torchrun
            [*(images or []), *(more_images or [])] or None, dataset=dataset, split=split, data_dir=data_dir,
            image_column=image_column, label_column=label_column, streaming=streaming,
            allow_outside_paths=allow_outside_paths, limit=limit, out=out,
            model=model, batch_size=batch_size, num_workers=workers, normalize=normalize, shard_size=shard_size,
            resolution=resolution, device=device, precision=precision, jpeg_draft=jpeg_draft,
            compile="auto" if compile_model is None else compile_model,
        )
    if not is_main_rank():
        return
    console = Console()
    resumed = f", {summary.shards_skipped} of {summary.num_shards} shards already done" if summary.shards_skipped else ""
    if out is None:
        console.print(f"output folder: {summary.out} (the default; --out to choose)", highlight=False, soft_wrap=True)
    console.print(f"{summary.num_extracted} of {summary.num_images} images -> {summary.out} "
                  f"({summary.num_features}-d, {summary.model}, {summary.precision} on {summary.device}"
                  f"{', compiled' if summary.compiled else ''}{resumed})",
                  highlight=False, soft_wrap=True)
    if summary.num_failed:
        console.print(f"[yellow]{summary.num_failed} images failed to decode[/yellow]; see {summary.failures_csv}",
                      highlight=False, soft_wrap=True)
        for path, error in summary.failures[:5]:
            console.print(f"  {path}: {error}", highlight=False, soft_wrap=True, markup=False)


def register(app: typer.Typer) -> None:
    """Adds this module's commands to the CLI."""
    app.command("extract")(extract_command)
