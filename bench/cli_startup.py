"""How fast the command line answers `--version` and `--help`: whole processes, side by side.

    python bench/cli_startup.py                 # 7 rounds of each command
    python bench/cli_startup.py --rounds 15

Each round runs, as its own process and in turn:
- ours: `equimod-zoo --version`, `equimod-zoo --help` and `equimod-zoo extract --help`, the way a
  user types them (the installed console script, or `python -m equimod_zoo` without one);
- eager: the same entry point after `import torch, timm, numpy`, which is what the command line
  imported before answering until it learnt to import them inside each command;
- python: `python -c pass`, the interpreter's own start-up, the floor no command goes below.
The table gives each variant's median wall time over the rounds and the ratio eager / ours.
Run it on an otherwise idle machine: start-up is mostly reading files and importing.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS = (("--version",), ("--help",), ("extract", "--help"))
EAGER = ("import sys, torch, timm, numpy; from equimod_zoo.cli import main; "
         "sys.argv = ['equimod-zoo', *sys.argv[1:]]; main()")


def ours(args: tuple[str, ...]) -> list[str]:
    script = shutil.which("equimod-zoo")
    return [script, *args] if script else [sys.executable, "-m", "equimod_zoo", *args]


def seconds(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7, help="Runs of each variant (their median is shown).")
    args = parser.parse_args()

    variants = {"python -c pass": [sys.executable, "-c", "pass"]}
    for command in COMMANDS:
        shown = " ".join(command)
        variants[f"ours: equimod-zoo {shown}"] = ours(command)
        variants[f"eager: equimod-zoo {shown}"] = [sys.executable, "-c", EAGER, *command]
    for command in variants.values():  # one untimed run each: the file cache is warm for all of them
        seconds(command)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):  # interleaved, so a busy moment slows every variant alike
        for name, command in variants.items():
            times[name].append(seconds(command))
    median = {name: statistics.median(values) for name, values in times.items()}

    print(f"{'variant':44} {'median s':>9} {'min s':>7}")
    for name, values in times.items():
        print(f"{name:44} {median[name]:9.3f} {min(values):7.3f}")
    for command in COMMANDS:
        shown = " ".join(command)
        ratio = median[f"eager: equimod-zoo {shown}"] / median[f"ours: equimod-zoo {shown}"]
        print(f"equimod-zoo {shown}: {median[f'ours: equimod-zoo {shown}']:.3f} s, eager "
              f"{median[f'eager: equimod-zoo {shown}']:.3f} s: {ratio:.1f}x")


if __name__ == "__main__":
    main()
