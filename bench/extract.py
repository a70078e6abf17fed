"""Feature extraction speed: `extract_features` against the plain loop a timm user writes.

    python bench/extract.py                       # 256 Flowers-102 test JPEGs from ../shared/data
    python bench/extract.py --images DIR --num-images 1000 --batch-size 64 --workers 2

Both pipelines run ResNet-50 (timm `resnet50`, random weights, headless) at 224 px on the same
JPEG files, end to end (decode, preprocess, model), side by side in one run:

- plain: fp32, `timm.data.create_transform(**data_config)`, a DataLoader with 2 workers and
  batch 32, `model(x)` under `torch.no_grad()`;
- ours: `equimod_zoo.extract_features` (BatchNorm folded, channels-last, bf16 autocast where
  the CPU has AMX or AVX512-BF16, inference mode, batch 64, decoding in workers while the
  model runs, JPEG draft decoding), including model preparation and writing the shards;
- with --compile, also ours with `compile=True`, the compile time included.

The model-only rows run one preprocessed batch held in memory through each model with each
pipeline's settings: the ceiling that decoding can at best reach. Besides images per second
of wall time, the table gives images per CPU-second (this process and its DataLoader
workers): on a machine shared with other jobs that column is the steadier one. It leaves out
inductor's compile workers, so for the compiled row it flatters; read its wall time.
"""
from __future__ import annotations

import argparse
import io
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

SHARED_FLOWERS = Path(__file__).resolve().parents[2] / "shared" / "data" / "flowers102" / "test.parquet"


class Timer:
    """Wall time and CPU time (this process and its finished children, i.e. DataLoader workers)."""

    def __enter__(self) -> Timer:
        self.wall, self.cpu = time.perf_counter(), _cpu_seconds()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, _cpu_seconds() - self.cpu


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def write_jpegs(parquet: Path, folder: Path, count: int) -> list[Path]:
    """The first `count` images of a Hugging Face image parquet, as JPEG files."""
    import pyarrow.parquet as pq
    from PIL import Image

    table = pq.read_table(parquet, columns=["image"]).slice(0, count)
    paths = []
    for i, cell in enumerate(table.column("image").to_pylist()):
        path = folder / f"{i:06d}.jpg"
        data = cell["bytes"]
        if Image.open(io.BytesIO(data)).format != "JPEG":
            buffer = io.BytesIO()
            Image.open(io.BytesIO(data)).convert("RGB").save(buffer, "JPEG", quality=90)
            data = buffer.getvalue()
        path.write_bytes(data)
        paths.append(path)
    return paths


class PlainFolder(torch.utils.data.Dataset):
    """What a timm user writes: open, convert to RGB, transform."""

    def __init__(self, paths: list[Path], transform) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        from PIL import Image

        with Image.open(self.paths[i]) as image:
            return self.transform(image.convert("RGB"))


def plain_loop(model: torch.nn.Module, paths: list[Path], *, batch_size: int = 32, workers: int = 2) -> Timer:
    import timm.data

    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    loader = torch.utils.data.DataLoader(PlainFolder(paths, transform), batch_size=batch_size, num_workers=workers)
    with Timer() as timer, torch.no_grad():
        for x in loader:
            model(x)
    return timer


def ours(model: torch.nn.Module, source, out: Path, *, batch_size: int, workers: int, compile: bool = False) -> Timer:
    from equimod_zoo.extraction.extract import extract_features

    with Timer() as timer:
        summary = extract_features(source, model=model, out=out, batch_size=batch_size, num_workers=workers,
                                   compile=compile, progress=False)
    if summary.num_failed:
        raise RuntimeError(f"{summary.num_failed} images failed; see {summary.failures_csv}")
    return timer


def model_only(model: torch.nn.Module, batch: torch.Tensor, *, optimised: bool, repeats: int) -> Timer:
    """The model alone on an in-memory batch, with plain or our settings."""
    from equimod_zoo.extraction.extract import _amp_dtype, _forward, inference_network

    if optimised:
        amp = _amp_dtype("auto", torch.device("cpu"))
        model = inference_network(model).to(memory_format=torch.channels_last)
        context = torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None)

        def step():
            with torch.inference_mode(), context:
                _forward(model, batch)
    else:
        def step():
            with torch.no_grad():
                model(batch)
    step()  # warm-up: oneDNN builds its kernels on the first call
    with Timer() as timer:
        for _ in range(repeats):
            step()
    return timer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, help="a folder of JPEGs (default: write some from Flowers-102)")
    parser.add_argument("--parquet", type=Path, default=SHARED_FLOWERS, help="where to take the default JPEGs from")
    parser.add_argument("--num-images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64, help="our batch size (the plain loop uses 32)")
    parser.add_argument("--workers", type=int, default=2, help="our decoding workers (the plain loop uses 2)")
    parser.add_argument("--repeats", type=int, default=2, help="batches timed for the model-only rows")
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--compile", action="store_true",
                        help="also time extract_features(compile=True), compile time included")
    args = parser.parse_args(argv)

    import timm

    import equimod_zoo  # noqa: F401
    from equimod_zoo.data.sources import FileListSource, scan_images

    with tempfile.TemporaryDirectory() as tmp:
        if args.images:
            paths = scan_images(args.images)[: args.num_images]
        elif args.parquet.is_file():
            folder = Path(tmp) / "images"
            folder.mkdir()
            paths = write_jpegs(args.parquet, folder, args.num_images)
        else:
            sys.exit(f"{args.parquet}: missing; pass --images DIR or --parquet FILE")
        print(f"{len(paths)} images, {args.arch} at 224 px, {torch.get_num_threads()} threads, "
              f"load average {os.getloadavg()[0]:.1f}")

        torch.manual_seed(0)
        plain_model = timm.create_model(args.arch, pretrained=False, num_classes=0).eval()
        our_model = timm.create_model(args.arch, pretrained=False, num_classes=0).eval()
        our_model.load_state_dict(plain_model.state_dict())

        import timm.data

        config = timm.data.resolve_model_data_config(plain_model)
        transform = timm.data.create_transform(**config)
        warm = PlainFolder(paths[: args.batch_size], transform)
        batch = torch.stack([warm[i] for i in range(len(warm))])

        rows: list[tuple[str, int, Timer]] = []
        with torch.no_grad():
            plain_model(batch[:2])  # both pipelines start warm
        rows.append(("plain loop (fp32, batch 32, 2 workers)", len(paths), plain_loop(plain_model, paths)))
        rows.append((f"extract_features (batch {args.batch_size}, {args.workers} workers)", len(paths),
                     ours(our_model, FileListSource(paths), Path(tmp) / "out", batch_size=args.batch_size,
                          workers=args.workers)))
        if args.compile:
            rows.append((f"extract_features, compiled (batch {args.batch_size})", len(paths),
                         ours(our_model, FileListSource(paths), Path(tmp) / "out_compiled", batch_size=args.batch_size,
                              workers=args.workers, compile=True)))
        timed = args.repeats * len(batch)
        rows.append(("model only, plain settings", timed,
                     model_only(plain_model, batch, optimised=False, repeats=args.repeats)))
        rows.append(("model only, our settings", timed,
                     model_only(our_model, batch, optimised=True, repeats=args.repeats)))

    base_wall, base_cpu = rows[0][1] / rows[0][2].wall, rows[0][1] / rows[0][2].cpu
    width = max(len(name) for name, _, _ in rows)
    print(f"{'pipeline':<{width}}  {'images/s':>9}  {'vs plain':>8}  {'img/CPU-s':>9}  {'vs plain':>8}")
    for name, count, timer in rows:
        wall, cpu = count / timer.wall, count / timer.cpu
        print(f"{name:<{width}}  {wall:>9.1f}  {wall / base_wall:>7.2f}x  {cpu:>9.2f}  {cpu / base_cpu:>7.2f}x")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
