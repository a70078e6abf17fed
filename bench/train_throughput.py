"""Training throughput of SimCLR + EquiMod on resnet18_cifar: our step against a reference-style step.

    python bench/train_throughput.py                       # $EQUIMOD_DATA/cifar10-jpeg, CPU or GPU
    python bench/train_throughput.py --synthetic --steps 3 --batch-size 64

Ours is the real trainer (`equimod_zoo.training.trainer.train`): CIFAR decoded once into a uint8
tensor on the device, batched augmentations on the device, bf16 autocast on CPUs with native bf16 (else fp32) / AMP on the
GPU, channels_last. The reference-style step is how such training is usually written: per-image
PIL augmentations (training/augment_reference.py, the same distribution and parameter vector) in
DataLoader workers that decode each JPEG, then the same model, method, loss and LARS in fp32.
Both are measured side by side in this run, after the same number of warm-up steps.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from equimod_zoo.devices import cpu_has_fast_bf16
from equimod_zoo.records import data_path
from equimod_zoo.training.augment_reference import ReferenceAugment
from equimod_zoo.training.export import build_backbone
from equimod_zoo.training.methods import build_method
from equimod_zoo.training.optim import build_optimizer, set_lr
from equimod_zoo.training.recipe import Recipe, load_recipe
from equimod_zoo.training.run_log import read_log
from equimod_zoo.training.trainer import train

CIFAR10_TRAIN_IMAGES = 50_000


class ReferenceViews(Dataset):
    """One image per item, decoded from its JPEG here (in a worker): x0, (x1, p1), (x2, p2)."""

    def __init__(self, images, recipe: Recipe) -> None:
        self.images = images  # a `datasets.Dataset` whose Image column decodes to PIL
        self.column = [c for c in images.column_names if c in ("img", "image")][0]
        self.views = [ReferenceAugment(recipe.augment, view=v) for v in (0, 1)]
        size = recipe.augment.size
        self.identity = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size),
                                   T.ToTensor(), T.Normalize(recipe.augment.mean, recipe.augment.std)])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = self.images[int(index)][self.column].convert("RGB")
        (x1, p1), (x2, p2) = (view(image) for view in self.views)
        return self.identity(image), x1, p1, x2, p2


def synthetic_parquet(folder: Path, count: int, size: int = 32) -> Path:
    """Random photographs-to-be as JPEGs in a CIFAR-style train.parquet (what --synthetic trains on)."""
    import datasets
    import PIL.Image

    pixels = np.random.default_rng(0).integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
    images = []
    for p in pixels:
        image = PIL.Image.fromarray(p)
        image.format = "JPEG"  # datasets keeps the JPEG encoding, as in the CIFAR-10 parquet
        images.append(image)
    datasets.Dataset.from_dict({"img": images, "label": [0] * count}, features=features).to_parquet(
        str(folder / "train.parquet"))
    return folder


def measure_ours(recipe: Recipe, *, data: Path, device: str, steps: int, cache: Path, out: Path) -> float:
    """Images/s of the real training loop over `steps` steps, after `steps` warm-up steps."""
    train(recipe.override({"log_every": steps}), data=data, out=out, max_steps=2 * steps, device=device,
          cache_dir=cache, data_limit=2 * steps * recipe.batch_size, progress=False)
    return read_log(out)[-1]["images_per_s"]  # the second row: the steps after the warm-up


def measure_reference(recipe: Recipe, *, data: Path, device: str, steps: int, workers: int, cache: Path) -> float:
    """Images/s of a per-image PIL pipeline in DataLoader workers feeding an fp32 step."""
    import datasets

    device = torch.device(device)
    images = datasets.load_dataset("parquet", data_files={"train": str(data / "train.parquet")}, split="train",
                                   cache_dir=str(cache / "datasets"))
    images = images.select(range(min(len(images), 2 * steps * recipe.batch_size)))
    loader = DataLoader(ReferenceViews(images, recipe), batch_size=recipe.batch_size, shuffle=True,
                        num_workers=workers, drop_last=True, pin_memory=device.type == "cuda",
                        persistent_workers=workers > 0)
    torch.manual_seed(recipe.seed)
    method = build_method(recipe.method, build_backbone(recipe)).to(device)
    optimizer = build_optimizer(method, recipe.optim, batch_size=recipe.batch_size)
    set_lr(optimizer, recipe.optim.peak_lr(recipe.batch_size))
    method.train()
    batches = iter(loader)
    start = 0.0
    for step in range(2 * steps):
        if step == steps:
            _synchronize(device)
            start = time.perf_counter()
        x0, x1, p1, x2, p2 = (t.to(device, non_blocking=True) for t in next(batches))
        output = method(x1, x2, x0=x0, p1=p1, p2=p2) if method.uses_params else method(x1, x2)
        optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        optimizer.step()
    _synchronize(device)
    return steps * recipe.batch_size / (time.perf_counter() - start)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None,
                        help="a CIFAR-style parquet folder (default: $EQUIMOD_DATA/cifar10-jpeg)")
    parser.add_argument("--synthetic", action="store_true", help="random JPEG images instead of --data")
    parser.add_argument("--recipe", default="simclr_equimod_r18_cifar10")
    parser.add_argument("--steps", type=int, default=5, help="warm-up steps, then as many timed steps")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 512 on GPU, 64 on CPU")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--compile", choices=("off", "model", "step"), default="off",
                        help="torch.compile our method (model) or our whole training step (step)")
    parser.add_argument("--compile-mode", default="default",
                        help="torch.compile mode: default, reduce-overhead (CUDA graphs), max-autotune-no-cudagraphs")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    batch_size = args.batch_size or (512 if cuda else 64)
    recipe = load_recipe(args.recipe, overrides={"batch_size": batch_size, "compile": args.compile,
                                                  "compile_mode": args.compile_mode,
                                                  "workers": args.workers, "optim.warmup_epochs": 0})

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.synthetic:
            data = synthetic_parquet(tmp / "synthetic", 2 * args.steps * batch_size)
        else:
            try:
                data = data_path("cifar10-jpeg/train.parquet", given=args.data and args.data / "train.parquet",
                                 option="--data").parent
            except FileNotFoundError as error:
                sys.exit(f"error: {error} (or use --synthetic)")
        ours = measure_ours(recipe, data=data, device=args.device, steps=args.steps, cache=tmp / "cache",
                            out=tmp / "run")
        reference = measure_reference(recipe, data=data, device=args.device, steps=args.steps,
                                      workers=args.workers, cache=tmp / "cache")

    device_name = torch.cuda.get_device_name(args.device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    table = Table(title=f"training throughput: {recipe.method.name}, {recipe.arch}, batch {batch_size}, "
                        f"{'synthetic' if args.synthetic else data.name}, {device_name}")
    table.add_column("step")
    table.add_column("images/s", justify="right")
    table.add_column("ratio", justify="right")
    table.add_row(f"reference (per-image PIL, {args.workers} workers, fp32)", f"{reference:,.1f}", "1.00x")
    precision = "AMP" if cuda else ("bf16 autocast" if cpu_has_fast_bf16() else "fp32")
    table.add_row(f"ours (batched on {args.device}, {precision}, channels_last"
                  f"{'' if args.compile == 'off' else f', compile {args.compile} ({args.compile_mode})'})",
                  f"{ours:,.1f}", f"{ours / reference:.2f}x")
    console = Console()
    console.print(table)
    if cuda:
        console.print(f"one CIFAR-10 epoch ({CIFAR10_TRAIN_IMAGES:,} images) at batch {batch_size}: "
                      f"{CIFAR10_TRAIN_IMAGES / ours:,.1f} s ours, {CIFAR10_TRAIN_IMAGES / reference:,.1f} s reference")


if __name__ == "__main__":
    main()
