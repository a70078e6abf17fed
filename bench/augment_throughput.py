"""Augmentation throughput: `BatchedAugment` against the per-image PIL pipeline, both views of EquiMod's pair.

    python bench/augment_throughput.py                        # 2048 CIFAR-10 images from $EQUIMOD_DATA
    python bench/augment_throughput.py --num-images 512 --workers 2 --threads 1

Both pipelines produce the same thing from the same decoded 32 x 32 uint8 images: two augmented,
normalised views and their 18-number parameter vectors, with BYOL's CIFAR-10 pipeline
(`AugmentConfig()`, the full vector: every operation timed). Side by side in one run:

- reference: `training/augment_reference.py`, torchvision.transforms on one PIL image at a
  time, in a DataLoader with `--workers` processes and batch `--batch-size`; the usual way;
- batched (CPU): `BatchedAugment` on whole uint8 batches in the main process with `--threads`
  torch threads (default: one per idle core, `equimod_zoo.runtime`, as the CLI chooses);
- batched (GPU): the same on CUDA, when there is one (timed with synchronisation).

Decoding is excluded from both (the images are decoded once before timing): this measures the
augmentations alone.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from equimod_zoo.records import data_path
from equimod_zoo.runtime import num_threads_to_use



def load_cifar(parquet: Path, count: int) -> torch.Tensor:
    """The first `count` images of a CIFAR-10 parquet as uint8 [N, 3, 32, 32] (random pixels without it)."""
    if not parquet.is_file():
        print(f"{parquet} not found: using random 32 x 32 images", file=sys.stderr)
        return torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    import io

    import pyarrow.parquet as pq
    from PIL import Image

    cells = pq.read_table(parquet, columns=["img"]).slice(0, count).column("img").to_pylist()
    arrays = [np.asarray(Image.open(io.BytesIO(cell["bytes"])).convert("RGB")) for cell in cells]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


class ReferencePairs(torch.utils.data.Dataset):
    """One PIL image -> both views and their parameters, as a DataLoader worker computes them."""

    def __init__(self, images: torch.Tensor) -> None:
        from PIL import Image

        from equimod_zoo.training.augment_reference import ReferenceAugment

        self.images = [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in images]
        self.views = [ReferenceAugment(view=0), ReferenceAugment(view=1)]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        (x1, p1), (x2, p2) = (view(self.images[index]) for view in self.views)
        return x1, p1, x2, p2


def time_reference(images: torch.Tensor, *, batch_size: int, workers: int, repeats: int) -> float:
    loader = torch.utils.data.DataLoader(ReferencePairs(images), batch_size=batch_size, num_workers=workers,
                                         persistent_workers=workers > 0)
    for _ in loader:  # warm-up: start the workers
        break
    start = time.perf_counter()
    for _ in range(repeats):
        for _batch in loader:
            pass
    return len(images) * repeats / (time.perf_counter() - start)


def time_batched(images: torch.Tensor, *, batch_size: int, repeats: int, device: torch.device) -> float:
    from equimod_zoo.equimod.augment import BatchedAugment

    augment = BatchedAugment()
    images = images.to(device)
    generator = torch.Generator(device=device).manual_seed(0)

    def epoch() -> None:
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size]
            augment(batch, view=0, generator=generator)
            augment(batch, view=1, generator=generator)
        if device.type == "cuda":
            torch.cuda.synchronize()

    epoch()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        epoch()
    return len(images) * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None,
                        help="A CIFAR-10 parquet, column img (default: $EQUIMOD_DATA/cifar10-jpeg/test.parquet).")
    parser.add_argument("--num-images", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference pipeline.")
    parser.add_argument("--threads", type=int, help="Torch threads of batched (CPU) (default: one per idle core, "
                                                    "as the CLI chooses).")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    try:
        args.data = data_path("cifar10-jpeg/test.parquet", given=args.data, option="--data")
    except FileNotFoundError as error:
        sys.exit(f"error: {error}")
    images = load_cifar(args.data, args.num_images)
    if args.threads is None:
        args.threads = num_threads_to_use()  # a thread per idle core: two threads on one free core wait on each other
    torch.set_num_threads(args.threads)
    rows = [(f"reference (PIL, {args.workers} workers)",
             time_reference(images, batch_size=args.batch_size, workers=args.workers, repeats=args.repeats))]
    rows.append((f"batched (CPU, {args.threads} threads)",
                 time_batched(images, batch_size=args.batch_size, repeats=args.repeats, device=torch.device("cpu"))))
    if torch.cuda.is_available():
        rows.append((f"batched ({torch.cuda.get_device_name()})",
                     time_batched(images, batch_size=args.batch_size, repeats=max(args.repeats, 5),
                                  device=torch.device("cuda"))))
    baseline = rows[0][1]
    print(f"\nboth views + parameters of {len(images)} images at 32 px, batch {args.batch_size}")
    print(f"{'pipeline':<40} {'images/s':>10} {'vs reference':>13}")
    for name, rate in rows:
        print(f"{name:<40} {rate:>10.0f} {rate / baseline:>12.2f}x")


if __name__ == "__main__":
    main()
