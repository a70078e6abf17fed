"""BYOL at a short budget: kNN top-1 after the same number of steps with two target-momentum settings.

    python bench/byol_short_cycle.py --data $EQUIMOD_DATA/cifar10-jpeg --steps 1000 --momentum 0.996 0.99

Trains `byol_r18_cifar10` (LARS, its augmentations, the cosine momentum schedule base -> 1 over
the run) for `--steps` steps on `--train-images` CIFAR-10 training images, once per
`--momentum` base, same seed and data, then reports the weighted kNN (k=200, T=0.1) top-1 of the
backbone's features on `--test-images` test images, with those training images as the bank (both
drawn at random: the parquet files are sorted by class). To fit a CPU, the backbone and heads are narrowed (`--width`); the number of steps is the
point, since a short GPU cycle (38 epochs of CIFAR-10 at batch 512: 3,700 steps) is what squeezes
the schedule. A comparison, not a benchmark of speed: both runs share every other setting.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch

from equimod_zoo.probes.knn import knn_probe
from equimod_zoo.training.data import load_train_data
from equimod_zoo.training.trainer import train


def features(model: torch.nn.Module, images: torch.Tensor, mean, std, batch: int = 512) -> torch.Tensor:
    mean = torch.tensor(mean).view(1, 3, 1, 1)
    std = torch.tensor(std).view(1, 3, 1, 1)
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            x = (images[start:start + batch].float() / 255 - mean) / std
            out.append(model(x))
    return torch.cat(out)


def random_subset(parquet: Path, count: int, folder: Path, seed: int) -> Path:
    """`count` rows of `parquet` drawn at random (seeded), as folder/train.parquet."""
    table = pq.read_table(parquet)
    rows = torch.randperm(len(table), generator=torch.Generator().manual_seed(seed))[:count].sort().values
    folder.mkdir(parents=True)
    pq.write_table(table.take(rows.tolist()), folder / "train.parquet")
    return folder / "train.parquet"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a CIFAR-10 parquet folder with train.parquet and test.parquet")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--momentum", type=float, nargs="+", default=[0.996, 0.99])
    parser.add_argument("--train-images", type=int, default=4096)
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--width", type=int, default=16, help="the stem width; stages are 1, 2, 4, 8 times it")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="fp32", help="fp32: on a CPU, bf16 is slower at these narrow widths")
    args = parser.parse_args()
    data = Path(args.data)
    w = args.width
    epochs = max(1, round(args.steps / (args.train_images // args.batch_size)))  # whole epochs: the full schedule
    narrow = {"model_args": {"channels": [w, 2 * w, 4 * w, 8 * w], "stem_width": w},
              "method.byol_proj_hidden": 64 * w, "method.byol_proj_out": 8 * w, "method.byol_pred_hidden": 64 * w,
              "precision": args.precision, "workers": 0, "log_every": 50, "checkpoint_every": 1000,
              "optim.warmup_epochs": max(1.0, epochs / 80)}  # the paper's 10 of 800 epochs, at least one
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        # Random subsets (the parquet files are sorted by class): the SSL training set, which is also
        # the kNN bank, and the test images.
        train_parquet = random_subset(data / "train.parquet", args.train_images, Path(tmp) / "train", args.seed)
        test_parquet = random_subset(data / "test.parquet", args.test_images, Path(tmp) / "test", args.seed)
        bank = load_train_data(train_parquet, base_size=32, progress=False).images
        bank_labels = torch.tensor(pq.read_table(train_parquet, columns=["label"])["label"].to_pylist())
        test_images = load_train_data(test_parquet, base_size=32, progress=False).images
        test_labels = torch.tensor(pq.read_table(test_parquet, columns=["label"])["label"].to_pylist())
        for base in args.momentum:
            out = Path(tmp) / f"m{base}"
            started = time.perf_counter()
            result = train("byol_r18_cifar10", data=train_parquet, out=out, epochs=epochs,
                           batch_size=args.batch_size, seed=args.seed, device="cpu", progress=False,
                           overrides={**narrow, "method.momentum_base": base})
            import equimod_zoo

            model = equimod_zoo.load(out).eval()
            cfg = model.pretrained_cfg
            knn = knn_probe(features(model, bank, cfg["mean"], cfg["std"]), bank_labels,
                            features(model, test_images, cfg["mean"], cfg["std"]), test_labels, device="cpu")
            row = {"momentum_base": base, "steps": result.step, "epochs_of_the_schedule": epochs,
                   "knn_top1": round(knn.top1, 2), "last_loss": result.last_loss,
                   "seconds": round(time.perf_counter() - started, 1)}
            results.append(row)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
