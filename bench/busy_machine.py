"""Speed on a busy machine: the same job idle and beside a CPU-bound process, side by side.

    python bench/busy_machine.py                       # extract, linear and the augmentation benchmark
    python bench/busy_machine.py --jobs linear --pin   # one job, the spinner pinned to the last core

A job that loses one core of U to another process can at best run U / (U - 1) times slower
(2x on 2 cores): that is the share of the CPU it lost. One that runs a thread per core slows
far more, because every parallel region waits at a barrier for the thread that shares its core
with the other process. Each job runs, as its own process:

- idle: nothing else running (run the benchmark on an otherwise idle machine);
- busy: beside a spinning Python process (`while True: pass`), started half a second before,
  with the CPU policy of `equimod_zoo.runtime` (one thread per idle core: what the CLI does);
- busy, a thread per core: the same with OMP_NUM_THREADS set to every usable core, as before
  the policy;
- with --wait-policy, also busy with OMP_WAIT_POLICY=PASSIVE (which only the environment can
  set, before torch loads).

Jobs: `extract` is `equimod-zoo extract` of --num-images Flowers-102 JPEGs with a ResNet-18 at
224 px; `linear` is `equimod-zoo linear` on CIFAR-10 features of the default model (extracted
once beforehand, not timed); `augment` is bench/augment_throughput.py, whose batched-CPU
images per second is read (its time, not the process's, is compared). The table gives each
variant's time, its slowdown against idle, and the bound U / (U - spinners).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
CLI = [sys.executable, "-m", "equimod_zoo"]


@dataclass
class Job:
    name: str
    command: list[str]
    rate_pattern: str | None = None  # read images/s from the output instead of timing the process
    output: Path | None = None  # removed before each run: a finished extraction would be skipped, not redone


def spinner(pin: bool) -> subprocess.Popen:
    """A CPU-bound process, on the last usable core when pinned."""
    cpus = sorted(os.sched_getaffinity(0))
    return subprocess.Popen([sys.executable, "-c", "while True: pass"],
                            preexec_fn=(lambda: os.sched_setaffinity(0, {cpus[-1]})) if pin else None)


def seconds_of(job: Job, env: dict[str, str]) -> float:
    """The job's time: its process's wall time, or 1 / the rate it reports."""
    if job.output is not None:
        shutil.rmtree(job.output, ignore_errors=True)
    started = time.perf_counter()
    result = subprocess.run(job.command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode:
        sys.exit(f"{job.name} failed (exit {result.returncode}):\n{(result.stdout + result.stderr)[-3000:]}")
    if job.rate_pattern is None:
        return seconds
    match = re.search(job.rate_pattern, result.stdout)
    if not match:
        sys.exit(f"{job.name}: no rate matching {job.rate_pattern!r} in its output:\n{result.stdout[-2000:]}")
    return 1000.0 / float(match.group(1))  # seconds per 1000 images


def prepare(jobs: list[str], tmp: Path, num_images: int) -> list[Job]:
    """Write the inputs (not timed) and describe each job."""
    import pyarrow.parquet as pq

    from equimod_zoo.records import data_path

    prepared = []
    if "extract" in jobs:
        sys.path.insert(0, str(BENCH))
        from extract import write_jpegs, write_model

        (tmp / "images").mkdir()
        write_jpegs(data_path("flowers102/test.parquet"), tmp / "images", num_images)
        write_model(tmp / "resnet18", "resnet18")
        prepared.append(Job("extract", [*CLI, "extract", "--images", str(tmp / "images"), "--model",
                                        str(tmp / "resnet18"), "--out", str(tmp / "extract_out"), "--no-compile"],
                            output=tmp / "extract_out"))
    if "linear" in jobs:
        for split, rows in (("train", 4000), ("test", 1000)):
            table = pq.read_table(data_path(f"cifar10-jpeg/{split}.parquet"))
            step = max(1, table.num_rows // rows)  # every step-th row: the parquet may be sorted by class
            table = table.take(list(range(0, min(table.num_rows, step * rows), step)))
            (tmp / f"cifar_{split}").mkdir()
            pq.write_table(table, tmp / f"cifar_{split}" / f"{split}.parquet")
            subprocess.run([*CLI, "extract", "--dataset", str(tmp / f"cifar_{split}"), "--split", split,
                            "--out", str(tmp / f"features_{split}")], check=True, capture_output=True)
        prepared.append(Job("linear", [*CLI, "linear", "--train", str(tmp / "features_train"),
                                       "--test", str(tmp / "features_test")]))
    if "augment" in jobs:
        prepared.append(Job("augment", [sys.executable, str(BENCH / "augment_throughput.py"), "--num-images", "2048",
                                        "--repeats", "3"], rate_pattern=r"batched \(CPU[^)]*\)\s+(\d+)"))
    return prepared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", nargs="+", default=["extract", "linear", "augment"],
                        choices=["extract", "linear", "augment"])
    parser.add_argument("--num-images", type=int, default=512, help="JPEGs of the extract job")
    parser.add_argument("--pin", action="store_true", help="pin the spinner to the last core")
    parser.add_argument("--wait-policy", action="store_true", help="also run busy with OMP_WAIT_POLICY=PASSIVE")
    args = parser.parse_args()

    from equimod_zoo.runtime import usable_cpus

    usable = usable_cpus()
    if usable < 2:
        sys.exit("one usable core: nothing to share")
    bound = usable / (usable - 1)
    base_env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    variants = [("idle", base_env, False), ("busy", base_env, True),
                ("busy, a thread per core", {**base_env, "OMP_NUM_THREADS": str(usable)}, True)]
    if args.wait_policy:
        variants.append(("busy, OMP_WAIT_POLICY=PASSIVE", {**base_env, "OMP_WAIT_POLICY": "PASSIVE"}, True))

    print(f"{usable} usable cores, load average {os.getloadavg()[0]:.1f}; spinner "
          f"{'pinned to the last core' if args.pin else 'unpinned'}; bound on the slowdown {bound:.2f}x")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            jobs = prepare(args.jobs, Path(tmp), args.num_images)
        except FileNotFoundError as error:
            sys.exit(f"error: {error}")
        for job in jobs:
            idle = None
            for name, env, busy in variants:
                other = spinner(args.pin) if busy else None
                try:
                    if other:
                        time.sleep(0.5)  # on a core before the job looks for idle ones
                    seconds = seconds_of(job, env)
                finally:
                    if other:
                        other.kill()
                        other.wait()
                idle = seconds if idle is None else idle
                rows.append((job.name, name, seconds, seconds / idle))
                print(f"  {job.name:<8} {name:<32} {seconds:8.2f} s  {seconds / idle:5.2f}x", flush=True)

    print(f"\n{'job':<8} {'run':<32} {'seconds':>8} {'slowdown':>9} {'bound':>6}")
    for job, name, seconds, slowdown in rows:
        unit = " (per 1000 images)" if job == "augment" else ""
        print(f"{job:<8} {name:<32} {seconds:8.2f} {slowdown:8.2f}x {bound if name != 'idle' else 1:5.2f}x{unit}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
