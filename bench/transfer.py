"""Benchmark: one Flowers-102 linear transfer, our protocol against the paper-style one, side by side.

    python bench/transfer.py                                        # full splits, 90 SGD epochs (long on a CPU)
    python bench/transfer.py --epochs 2 --limit-per-split 510       # a few minutes on 2 cores

- ours (Kornblith et al. 2019): extract frozen features once (`extract_features`), then the L-BFGS
  logistic regression with its L2 sweep on the validation split, refit on train + val.
- paper-style (the EquiMod/SimCLR linear evaluation): a linear layer trained by SGD (Nesterov,
  lr 0.2 at batch 256, cosine) over randomly cropped and flipped images; the frozen backbone
  runs on every image of every epoch.

Both fit on train + val and report the official metric (mean per-class accuracy on test). With
fewer than 90 epochs, the table also gives the paper-style time projected to 90 epochs.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import timm
import timm.data
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torchvision import transforms

import equimod_zoo
from equimod_zoo.cli import library_output
from equimod_zoo.data.images import load_rgb
from equimod_zoo.model_folder import write_model_folder
from equimod_zoo.probes.metrics import classification_scores
from equimod_zoo.progress import progress_bar
from equimod_zoo.records import data_path
from equimod_zoo.transfer.datasets import load_splits, resolve_dataset
from equimod_zoo.transfer.run import transfer

PAPER_EPOCHS = 90


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="Flowers-102 in the parquet layout (default: $EQUIMOD_DATA/flowers102).")
    parser.add_argument("--model", default=None, help="A zoo name or model folder (default: timm resnet18, random weights).")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=PAPER_EPOCHS, help="Paper-style SGD epochs (90 in the paper).")
    parser.add_argument("--limit-per-split", type=int, default=0, help="Keep this many images per split (0: all).")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default).")
    args = parser.parse_args(argv)
    library_output(verbose=False)  # the datasets library's own bars and logs, quiet as in the command line
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        args.data_dir = data_path("flowers102", given=args.data_dir)
    except FileNotFoundError as error:
        sys.exit(f"error: {error}")

    with tempfile.TemporaryDirectory(prefix="bench_transfer_") as tmp:
        tmp = Path(tmp)
        model = args.model or _random_resnet18(tmp / "resnet18_random")
        data_dir = _limited_copy(args.data_dir, tmp / "data", args.limit_per_split) if args.limit_per_split else args.data_dir
        splits = load_splits(resolve_dataset("flowers102"), data_dir=data_dir, cache_dir=tmp / "cache")
        print(f"ours: extract each split, then the L-BFGS sweep; then the paper-style SGD ({args.epochs} epochs)")
        sizes = ", ".join(f"{k} {v}" for k, v in splits.sizes().items())

        started = time.perf_counter()
        ours = transfer("flowers102", model=model, data_dir=data_dir, resolution=args.resolution, cache_dir=tmp / "cache",
                        batch_size=args.batch_size, num_workers=args.workers, device="cpu")
        ours_seconds = time.perf_counter() - started

        paper_score, paper_seconds, epoch_seconds = _paper_style(model, splits, resolution=args.resolution,
                                                                 epochs=args.epochs, batch_size=args.batch_size,
                                                                 workers=args.workers)

    table = Table(title=f"Flowers-102 linear transfer, {ours.model} at {args.resolution}px ({sizes}; "
                        f"torch threads: {torch.get_num_threads()})")
    for column in ("protocol", "mean per-class acc. (%)", "time (s)", "time / ours"):
        table.add_column(column, justify="left" if column == "protocol" else "right")
    table.add_row("ours: features once + L-BFGS sweep", f"{ours.score:.2f}", f"{ours_seconds:.1f}", "1.00")
    table.add_row(f"paper-style: SGD, {args.epochs} epochs, augmented", f"{paper_score:.2f}", f"{paper_seconds:.1f}",
                  f"{paper_seconds / ours_seconds:.2f}")
    if args.epochs != PAPER_EPOCHS:
        projected = paper_seconds + (PAPER_EPOCHS - args.epochs) * epoch_seconds
        table.add_row(f"paper-style projected to {PAPER_EPOCHS} epochs (shortened run)", "-", f"{projected:.0f}",
                      f"{projected / ours_seconds:.1f}")
    Console().print(table)
    print(f"ours chose weight decay {ours.hyperparameters['weight_decay']:.3g} from {len(ours.hyperparameters['val_scores'])} values")


def _random_resnet18(folder: Path) -> str:
    torch.manual_seed(0)
    write_model_folder(folder, timm.create_model("resnet18", pretrained=False, num_classes=0), arch="resnet18")
    return str(folder)


def _limited_copy(source: Path, target: Path, limit: int) -> Path:
    """Every split cut to `limit` rows, taken evenly through the file so every part of it is represented."""
    import datasets

    target.mkdir(parents=True)
    for path in sorted(source.glob("*.parquet")):
        table = datasets.load_dataset("parquet", data_files={"x": str(path)}, split="x",
                                      cache_dir=str(target.parent / "hf"))
        step = max(1, len(table) // limit)
        table.select(range(0, len(table), step)[:limit]).to_parquet(str(target / path.name))
    return target


def _paper_style(model: str, splits, *, resolution: int, epochs: int, batch_size: int,
                 workers: int) -> tuple[float, float, float]:
    """Train a linear layer on the frozen backbone over augmented images; (score, seconds, seconds per epoch)."""
    started = time.perf_counter()
    backbone = equimod_zoo.load(model).eval()
    for parameter in backbone.parameters():
        parameter.requires_grad_(False)
    config = timm.data.resolve_model_data_config(backbone)
    config["input_size"] = (3, resolution, resolution)
    train_transform = transforms.Compose([
        transforms.RandomResizedCrop(resolution), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
        transforms.Normalize(config["mean"], config["std"])])
    eval_transform = timm.data.create_transform(**config, is_training=False)
    train_sets = [_Images(s, train_transform) for s in (splits.train, splits.val) if s is not None]
    loader = torch.utils.data.DataLoader(torch.utils.data.ConcatDataset(train_sets), batch_size=batch_size,
                                         shuffle=True, num_workers=workers, generator=torch.Generator().manual_seed(0))
    classifier = torch.nn.Linear(backbone.num_features, splits.num_classes)
    optimizer = torch.optim.SGD(classifier.parameters(), lr=0.2 * batch_size / 256, momentum=0.9, nesterov=True)
    steps = epochs * len(loader)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    epoch_started = time.perf_counter()
    test_loader = torch.utils.data.DataLoader(_Images(splits.test, eval_transform), batch_size=batch_size,
                                              num_workers=workers)
    with progress_bar(unit="img") as bar:
        task = bar.add_task(f"paper-style: SGD linear layer on {Path(model).name}, {epochs} epochs over augmented "
                            f"train+val", total=epochs * len(loader.dataset))
        for _ in range(epochs):
            for images, labels in loader:
                with torch.no_grad():
                    features = backbone(images)
                loss = F.cross_entropy(classifier(features), labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                bar.advance(task, len(images))
        epoch_seconds = (time.perf_counter() - epoch_started) / epochs
        logits, targets = [], []
        task = bar.add_task("paper-style: score the test split", total=len(test_loader.dataset))
        with torch.no_grad():
            for images, labels in test_loader:
                logits.append(classifier(backbone(images)))
                targets.append(labels)
                bar.advance(task, len(images))
    score = classification_scores(torch.cat(logits), torch.cat(targets)).mean_per_class_accuracy
    return score, time.perf_counter() - started, epoch_seconds


class _Images(torch.utils.data.Dataset):
    def __init__(self, images, transform) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(load_rgb(lambda: self.images.open(i)).image), self.images.label(i)


if __name__ == "__main__":
    main()
