"""Measured results recorded beside the weights they were measured on.

Evaluation commands (`linear`, `transfer`, `probe-augs`) can record their numbers into a model
folder's config.json (`equimod.results`). A result carries the sha256 of the weights it was
measured on, and is refused for a folder holding other weights, so a card never shows a number
that belongs to different weights.
"""
from __future__ import annotations

import shlex
import sys
from dataclasses import asdict, replace
from pathlib import Path

from equimod_zoo.model_folder import WEIGHTS_FILE, ModelConfig, sha256_file
from equimod_zoo.registry import Metric


def command_line() -> str:
    """The command being run, as a user would retype it."""
    program = Path(sys.argv[0]).name
    program = "equimod-zoo" if program in ("equimod-zoo", "__main__.py") else program
    return shlex.join([program, *sys.argv[1:]])


def read_results(folder: str | Path) -> list[Metric]:
    return [Metric.from_dict(m) for m in ModelConfig.read(folder).equimod.get("results", [])]


def record_results(folder: str | Path, metrics: list[Metric]) -> None:
    """Add (or replace, by name/dataset/protocol) results in `folder`'s config.json."""
    folder = Path(folder)
    config = ModelConfig.read(folder)
    actual = sha256_file(folder / WEIGHTS_FILE)
    for metric in metrics:
        if metric.weights_sha256 != actual:
            raise ValueError(
                f"{folder / WEIGHTS_FILE}: sha256 {actual} differs from the weights the {metric.dataset} "
                f"{metric.protocol} {metric.name} result was measured on ({metric.weights_sha256})"
            )
    keep = {(m.name, m.dataset, m.protocol): m for m in read_results(folder)}
    keep.update({(m.name, m.dataset, m.protocol): replace(m, value=round(m.value, 4)) for m in metrics})
    config.equimod["results"] = [asdict(m) for m in keep.values()]
    config.write(folder)
