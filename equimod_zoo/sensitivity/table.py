"""Probe-augs reports side by side: read the JSON files, write a markdown table."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from equimod_zoo.errors import UserError
from equimod_zoo.json_file import read_json
from equimod_zoo.sensitivity.run import INPUT_KINDS, REPORT_KEYS, report_parameters


def read_reports(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Every report in the given `probe-augs --json` files (a file holds one report or a list)."""
    reports = []
    for path in paths:
        try:
            data = read_json(path, expect=(dict, list))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such probe-augs report") from None
        for report in data if isinstance(data, list) else [data]:
            missing = [key for key in REPORT_KEYS if key not in report]
            if missing:
                raise UserError(f"{path}: not a probe-augs report (missing {', '.join(missing)})")
            reports.append(report)
    return reports


def markdown_table(reports: Sequence[dict[str, Any]], *, kind: str = "view") -> str:
    """One row per augmentation parameter, one column per model: score [95 % interval].

    A parameter a model's pipeline does not have (blur for SimCLR on CIFAR-10) reads "n/a"."""
    if kind not in INPUT_KINDS:
        raise UserError(f"input kind {kind!r}: expected one of {', '.join(INPUT_KINDS)}")
    header = "| parameter | metric | " + " | ".join(f"`{r['model']}`" for r in reports) + " |"
    rows = [header, "|---|---|" + "---|" * len(reports)]
    for name in report_parameters(reports):
        scores = [r["inputs"][kind].get(name) for r in reports]
        metric = next(s["metric"] for s in scores if s is not None)
        rows.append(f"| {name} | {metric} | " + " | ".join(_cell(s) for s in scores) + " |")
    return "\n".join(rows) + "\n"


def _cell(score: dict[str, Any] | None) -> str:
    if score is None:
        return "n/a"
    if score["value"] is None:
        return "—"
    if score["ci_low"] is None:
        return f"{score['value']:.3f}"
    return f"{score['value']:.3f} [{score['ci_low']:.3f}, {score['ci_high']:.3f}]"
