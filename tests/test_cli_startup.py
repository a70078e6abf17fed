"""The command line answers its version, its help and mistakes in its arguments without importing
torch, timm, datasets or numpy (bench/cli_startup.py measures what that saves)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "timm", "torchvision", "datasets", "numpy", "pyarrow", "PIL", "huggingface_hub", "safetensors")

# Runs the CLI's entry point in a fresh interpreter and prints (exit status, heavy modules imported).
RUN_CLI = """
import json, sys
from equimod_zoo.cli import main
sys.argv = ["equimod-zoo", *json.loads(sys.argv[1])]
try:
    main()
    code = 0
except SystemExit as stop:
    code = stop.code
print(json.dumps([code, sorted(m for m in {HEAVY!r} if m in sys.modules)]), file=sys.__stdout__)
"""


def run_cli(*args: str) -> tuple[int, list[str]]:
    done = subprocess.run([sys.executable, "-c", RUN_CLI.replace("{HEAVY!r}", repr(HEAVY)), json.dumps(args)],
                          capture_output=True, text=True, timeout=120)
    code, heavy = json.loads(done.stdout.strip().splitlines()[-1])
    return code, heavy


def test_importing_the_cli_imports_nothing_heavy():
    code = f"import sys, equimod_zoo.cli; print([m for m in {HEAVY!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("args", [
    ["--version"],
    ["--help"],
    ["extract", "--help"],
    ["transfer", "--help"],
    ["train", "--help"],
    ["extract", "--batch-size", "0"],        # out of range: an argument error, before any work
    ["transfer", "--no-such-option"],
    ["linear"],                                # a required option missing
    ["extract"],                               # neither --images nor --dataset
    ["linear", "--train", "a", "--test", "b", "--record", "r"],    # --record without --dataset-name
    ["probe-augs", "--model", "a", "--views", "3"],
])
def test_version_help_and_argument_errors_import_nothing_heavy(args):
    code, heavy = run_cli(*args)
    assert heavy == []
    assert code == (0 if args[-1] in ("--version", "--help") else 2)


def test_timm_knows_the_cifar_architectures_once_equimod_zoo_is_imported():
    # either order: equimod_zoo first registers when timm loads, timm first registers at once
    for imports in ("import equimod_zoo, timm", "import timm, equimod_zoo", "import equimod_zoo; from timm import models"):
        code = (f"{imports}; import sys, timm; "
                "print(timm.is_model('resnet18_cifar'), timm.is_model('resnet50_cifar'))")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
        assert done.stdout.split() == ["True", "True"], imports
