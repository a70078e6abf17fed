"""Library functions leave the caller's global state alone: plotting backend, torch threads, warning filters."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import json, sys, warnings
import matplotlib
import torch

torch.set_num_threads(3)
before = {"backend": matplotlib.get_backend(), "threads": torch.get_num_threads()}

from equimod_zoo.equimod.augment import PARAM_NAMES
from equimod_zoo.method import Method
from equimod_zoo.sensitivity.plot import plot_sensitivity
from equimod_zoo.transfer.compare import ModelIdentity, Score, write_comparison

# third-party imports (sympy through torch) add warning filters of their own; our calls add none
filters = list(warnings.filters)

out = sys.argv[1]
score = {"metric": "r2", "value": 0.4, "ci_low": 0.3, "ci_high": 0.5}
report = {"model": "m", "dataset": "d", "num_images": 8, "resolution": 32,
          "inputs": {"view": {name: score for name in PARAM_NAMES}, "pair": {}}}
plot_sensitivity([report], out + "/sensitivity.png")
identity = ModelIdentity(Method("simclr"), "resnet18", "cifar10", 1)
write_comparison([Score("a", "cifar10", "linear", "top1", 50.0, identity=identity)], out)
after = {"backend": matplotlib.get_backend(), "threads": torch.get_num_threads()}
print(json.dumps({"before": before, "after": after, "filters_kept": warnings.filters == filters,
                  "pyplot": "matplotlib.pyplot" in sys.modules}))
"""


def test_plots_keep_the_backend_threads_and_warning_filters(tmp_path):
    # a backend the library would have switched away from with matplotlib.use("Agg")
    env = {**os.environ, "MPLBACKEND": "svg"}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).parent)
    assert done.returncode == 0, done.stderr
    state = json.loads(done.stdout.strip().splitlines()[-1])
    assert state["before"]["backend"] == "svg" and state["before"]["threads"] == 3
    assert state["after"] == state["before"] and state["filters_kept"]
    assert not state["pyplot"], "plots draw on their own Figure, without pyplot's global figure manager"
    assert (tmp_path / "sensitivity.png").stat().st_size > 1000 and (tmp_path / "comparison.png").is_file()


def test_library_sources_never_switch_global_state():
    """No library module calls what would change a caller's process-wide settings."""
    package = Path(__file__).resolve().parents[1] / "equimod_zoo"
    forbidden = ("matplotlib.use(", "torch.set_num_threads(", "torch.set_num_interop_threads(",
                 "warnings.simplefilter(", "warnings.filterwarnings(", "import matplotlib.pyplot", "plt.")
    offenders = []
    for path in package.rglob("*.py"):
        if "cli" in path.relative_to(package).parts:
            continue  # the command-line entry point owns the process
        text = path.read_text()
        for line_number, line in enumerate(text.splitlines(), 1):
            stripped = line.strip()
            if any(f in stripped for f in forbidden) and not _inside_catch_warnings(text, line_number):
                offenders.append(f"{path.relative_to(package)}:{line_number}: {stripped}")
    assert not offenders, offenders


def _inside_catch_warnings(text: str, line_number: int) -> bool:
    """A warnings filter set inside `with warnings.catch_warnings():` is restored on exit: allowed."""
    lines = text.splitlines()[:line_number]
    indent = len(lines[-1]) - len(lines[-1].lstrip())
    for line in reversed(lines[:-1]):
        own = len(line) - len(line.lstrip())
        if line.strip() and own < indent:
            if "warnings.catch_warnings()" in line:
                return True
            indent = own
    return False
