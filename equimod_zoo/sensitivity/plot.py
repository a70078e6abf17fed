"""The sensitivity plot: one bar group per augmentation parameter, one bar per model, 95 % intervals."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from equimod_zoo.atomic import atomic_path
from equimod_zoo.errors import UserError
from equimod_zoo.optional import require
from equimod_zoo.sensitivity.probes import BALANCED_ACCURACY, metric_of
from equimod_zoo.sensitivity.run import report_parameters

INPUT_TITLES = {"view": "features of the augmented view", "pair": "features of [x0, augmented view]"}


def plot_sensitivity(reports: Sequence[dict[str, Any]], out: str | Path, *, title: str | None = None) -> Path:
    """Write a PNG (or any format matplotlib knows from the suffix): a panel per input kind.

    Continuous parameters show held-out R^2 (0: no information), binary ones (marked *) balanced
    accuracy (0.5: chance). Draws on its own `Figure` (no pyplot, no backend switch), so a
    notebook's plotting state is untouched.
    """
    Figure = require("matplotlib.figure", "plots", "probe-augs' chart").Figure

    if not reports:
        raise UserError("nothing to plot: no reports")
    kinds = [kind for kind in INPUT_TITLES if any(report["inputs"].get(kind) for report in reports)]
    names = report_parameters(reports)  # pipelines differ: a parameter a model lacks has no bar
    figure = Figure(figsize=(max(10, 0.7 * len(names) * max(1, len(reports) / 2)), 3.6 * len(kinds)))
    axes = figure.subplots(len(kinds), 1, squeeze=False)
    width = 0.8 / len(reports)
    binary = {name for name in names if metric_of(name) == BALANCED_ACCURACY}
    for axis, kind in zip(axes[:, 0], kinds):
        for m, report in enumerate(reports):
            scores = report["inputs"][kind]
            xs, values, errors = [], [], [[], []]
            for i, name in enumerate(names):
                score = scores.get(name)
                if score is None or score["value"] is None:
                    continue
                xs.append(i - 0.4 + width * (m + 0.5))
                values.append(score["value"])
                low = score["ci_low"] if score["ci_low"] is not None else score["value"]
                high = score["ci_high"] if score["ci_high"] is not None else score["value"]
                errors[0].append(max(0.0, score["value"] - low))
                errors[1].append(max(0.0, high - score["value"]))
            axis.bar(xs, values, width=width, yerr=errors, capsize=2, label=report["model"])
        axis.axhline(0.0, color="black", linewidth=0.8)
        axis.axhline(0.5, color="grey", linewidth=0.8, linestyle=":", label="chance (balanced accuracy)")
        axis.set_xticks(range(len(names)))
        axis.set_xticklabels([f"{name}*" if name in binary else name for name in names], rotation=45,
                             ha="right", fontsize=8)
        axis.set_ylim(min(-0.1, axis.get_ylim()[0]), 1.05)
        axis.set_ylabel("R² / balanced acc.*")
        axis.set_title(INPUT_TITLES[kind], fontsize=10)
    axes[0, 0].legend(fontsize=8, loc="upper right")
    first = reports[0]
    figure.suptitle(title or f"What frozen features keep of each augmentation ({first['dataset']}, "
                             f"{first['num_images']} images, {first['resolution']} px)", fontsize=11)
    figure.tight_layout()
    out = Path(out)
    with atomic_path(out) as tmp:
        figure.savefig(tmp, dpi=120, format=out.suffix.lstrip(".") or "png")
    return out
