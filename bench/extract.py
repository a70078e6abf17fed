"""Feature extraction speed, whole process against whole process: `equimod-zoo extract` against the
plain timm loop (bench/plain_timm_extract.py), on the same JPEG files and the same weights.

    python bench/extract.py                                  # 1024 Flowers-102 test JPEGs, ResNet-50 at 224 px
    python bench/extract.py --num-images 64 --arch resnet18  # a quick look

Each pipeline runs as its own process, timed from launch to exit, so everything a user waits
for counts: Python and torch start-up, model loading, our model preparation and
`torch.compile` (on a fresh, empty inductor cache: the first run a user ever makes), decoding,
the model, writing the output. Side by side in one run:

- plain: bench/plain_timm_extract.py: `timm.data.create_transform`, a DataLoader with 2 workers,
  batch 32, fp32, `torch.no_grad()`, features saved to one .npy;
- ours: `python -m equimod_zoo extract --images DIR --out OUT --model FOLDER` with its defaults;
- ours, warm cache: the same command again with the inductor cache the first run filled (a
  user's second extraction); with --eager, also ours with --no-compile; with --compiled, also
  ours with --compile on an empty cache (the default compiles only on bf16 CPUs: AMX or
  AVX512-BF16);
- with --floor, bench/model_forward.py: our network alone on random pixels, nothing read or
  decoded: the time no pipeline at this precision can beat on this CPU.

The table gives seconds, images per second and the ratio to plain, and CPU seconds (the
process and its children: DataLoader workers, compile workers). The two pipelines' features
are compared (cosine similarity per image), so a speed-up never hides a different result.
The machine's load is printed before and after: run it on an idle machine.
"""
from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PLAIN_SCRIPT = Path(__file__).resolve().parent / "plain_timm_extract.py"
FORWARD_SCRIPT = Path(__file__).resolve().parent / "model_forward.py"


@dataclass
class Run:
    name: str
    seconds: float
    cpu_seconds: float


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
    if len(paths) < count:
        sys.exit(f"{parquet}: has {len(paths)} images, fewer than --num-images {count}")
    return paths


def write_model(folder: Path, arch: str) -> None:
    """A model folder with seeded random weights: speed does not depend on what they learned."""
    import timm
    import torch

    from equimod_zoo.model_folder import write_model_folder

    torch.manual_seed(0)
    write_model_folder(folder, timm.create_model(arch, pretrained=False, num_classes=0), arch=arch)


def timed(name: str, command: list[str], env: dict[str, str]) -> Run:
    """Run `command` to its end; its wall time and the CPU time of it and its children."""
    print(f"$ {' '.join(command)}", flush=True)
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        sys.exit(f"{name} failed (exit {process.returncode}):\n{output[-3000:]}")
    if output.strip():
        print(f"  {output.strip().splitlines()[-1]}", flush=True)  # ours says whether it compiled
    return Run(name, seconds, usage.ru_utime + usage.ru_stime)


def cosine_agreement(plain_npy: Path, ours: Path) -> float:
    """The lowest cosine similarity between the two pipelines' features of one image."""
    import numpy as np

    from equimod_zoo.extraction.store import load_features

    plain = np.load(plain_npy)
    _, features = load_features(ours)
    if plain.shape != features.shape:
        sys.exit(f"plain gave {plain.shape} features, ours {features.shape}")
    plain /= np.linalg.norm(plain, axis=1, keepdims=True)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    return float((plain * features).sum(axis=1).min())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parquet", type=Path, default=None,
                        help="where the JPEGs come from (default: $EQUIMOD_DATA/flowers102/test.parquet)")
    parser.add_argument("--num-images", type=int, default=1024)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--eager", action="store_true", help="also time ours with --no-compile")
    parser.add_argument("--compiled", action="store_true",
                        help="also time ours with --compile (on an empty cache), where the default does not compile")
    parser.add_argument("--floor", action="store_true",
                        help="also time our network alone on random pixels (bench/model_forward.py)")
    parser.add_argument("--no-warm", dest="warm", action="store_false", help="skip the warm-cache rerun")
    parser.add_argument("--extract-args", default="", help="extra options for our command, e.g. '--batch-size 32'")
    args = parser.parse_args(argv)
    from equimod_zoo.records import data_path

    try:
        args.parquet = data_path("flowers102/test.parquet", given=args.parquet, option="--parquet")
    except FileNotFoundError as error:
        sys.exit(f"error: {error}")

    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "images").mkdir()
        write_jpegs(args.parquet, tmp / "images", args.num_images)
        write_model(tmp / "model", args.arch)
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp / "inductor")}  # empty: the first-ever run
        ours = [sys.executable, "-m", "equimod_zoo", "extract", "--images", str(tmp / "images"),
                "--model", str(tmp / "model"), *args.extract_args.split()]
        runs = [timed("plain timm loop (fp32, batch 32, 2 workers)",
                      [sys.executable, str(PLAIN_SCRIPT), "--images", str(tmp / "images"), "--out",
                       str(tmp / "plain.npy"), "--model-folder", str(tmp / "model")], env),
                timed("equimod-zoo extract (defaults, empty compile cache)", [*ours, "--out", str(tmp / "ours")], env)]
        if args.warm:
            runs.append(timed("equimod-zoo extract (defaults, warm compile cache)", [*ours, "--out", str(tmp / "warm")], env))
        if args.eager:
            runs.append(timed("equimod-zoo extract --no-compile", [*ours, "--no-compile", "--out", str(tmp / "eager")],
                              env))
        if args.compiled:
            env_compiled = {**env, "TORCHINDUCTOR_CACHE_DIR": str(tmp / "inductor_compiled")}
            runs.append(timed("equimod-zoo extract --compile (empty compile cache)",
                              [*ours, "--compile", "--out", str(tmp / "compiled")], env_compiled))
        if args.floor:
            runs.append(timed("floor: our network alone, random pixels, no files",
                              [sys.executable, str(FORWARD_SCRIPT), "--model-folder", str(tmp / "model"),
                               "--num-images", str(args.num_images)], env))
        agreement = cosine_agreement(tmp / "plain.npy", tmp / "ours")

    print(f"\n{args.num_images} JPEGs, {args.arch} at its own resolution, whole processes")
    width = max(len(run.name) for run in runs)
    print(f"{'pipeline':<{width}}  {'seconds':>8}  {'images/s':>8}  {'vs plain':>8}  {'CPU s':>7}")
    for run in runs:
        print(f"{run.name:<{width}}  {run.seconds:>8.1f}  {args.num_images / run.seconds:>8.1f}  "
              f"{runs[0].seconds / run.seconds:>7.2f}x  {run.cpu_seconds:>7.1f}")
    print(f"lowest cosine similarity between plain and our features of one image: {agreement:.5f}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
