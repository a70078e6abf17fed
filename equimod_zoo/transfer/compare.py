"""Comparison of models across datasets: a markdown table, a CSV and a bar chart.

Models pair by method name: `simclr_equimod_r18_cifar10` sits beside `simclr_r18_cifar10` (the
name without `_equimod`), in the same colour family, so the chart shows what EquiMod adds.
`write_comparison` takes plain `Score` rows, so other result sources (e.g. augmentation-probe
JSON files) can join the table without touching the transfer code.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from equimod_zoo.atomic import atomic_path, atomic_write_text
from equimod_zoo.transfer.run import transfer

EQUIMOD_MARK = "_equimod"
METRIC_LABELS = {"top1": "top-1", "mean_per_class_accuracy": "mean per-class"}


@dataclass(frozen=True)
class Score:
    """One cell of the comparison: a model's score on a dataset, in percent."""

    model: str
    dataset: str
    protocol: str
    metric: str
    value: float
    weights_sha256: str = ""
    resolution: int | None = None


@dataclass
class ComparisonReport:
    scores: list[Score]
    markdown: str
    markdown_path: Path
    csv_path: Path
    png_path: Path
    probes_path: Path | None = None  # probes.md and probes.png, when probe-augs reports were given
    probes_png_path: Path | None = None


def compare(
    models: Sequence[str],
    datasets: Sequence[str],
    *,
    out: str | Path,
    data_dirs: dict[str, str | Path] | None = None,
    protocol: str = "linear",
    resolution: int | None = None,
    cache_dir: str | Path | None = None,
    reuse: bool = True,
    num_workers: int = 2,
    device: str | None = None,
    progress: bool = True,
    probe_reports: Sequence[str | Path] = (),
) -> ComparisonReport:
    """Transfer every model to every dataset (cached features and results are reused) and write the comparison.

    `probe_reports` (files written by `equimod-zoo probe-augs --json`) add OUT/probes.md and
    OUT/probes.png: what each model keeps of every augmentation parameter, side by side.
    """
    data_dirs = dict(data_dirs or {})
    unknown = sorted(set(data_dirs) - set(datasets))
    if unknown:
        raise ValueError(f"--data-dir-map names {unknown[0]!r}, which is not in --datasets {list(datasets)}")
    scores = []
    for dataset in datasets:
        for model in models:
            result = transfer(dataset, model, data_dir=data_dirs.get(dataset), protocol=protocol, resolution=resolution,
                              cache_dir=cache_dir, reuse_result=reuse, num_workers=num_workers, device=device,
                              progress=progress)
            scores.append(Score(result.model, result.dataset, result.protocol, result.metric, result.score,
                                result.weights_sha256, result.resolution))
    report = write_comparison(scores, out)
    if probe_reports:
        report.probes_path, report.probes_png_path = write_probe_comparison(probe_reports, out)
    return report


def write_probe_comparison(paths: Sequence[str | Path], out: str | Path) -> tuple[Path, Path]:
    """OUT/probes.md (both input kinds) and OUT/probes.png from probe-augs report files."""
    from equimod_zoo.sensitivity.plot import plot_sensitivity
    from equimod_zoo.sensitivity.table import markdown_table as probe_table
    from equimod_zoo.sensitivity.table import read_reports

    reports = read_reports(paths)
    out = Path(out)
    text = "".join(f"## Augmentation probes: {title}\n\n{probe_table(reports, kind=kind)}\n"
                   for kind, title in (("view", "features of the augmented view"),
                                       ("pair", "features of [x0, augmented view]")))
    atomic_write_text(out / "probes.md", text)
    return out / "probes.md", plot_sensitivity(reports, out / "probes.png")


def write_comparison(scores: Sequence[Score], out: str | Path) -> ComparisonReport:
    """OUT/comparison.md, OUT/comparison.csv and OUT/comparison.png from score rows."""
    if not scores:
        raise ValueError("nothing to compare: no scores")
    out = Path(out)
    models = paired_order([s.model for s in scores])
    datasets = list(dict.fromkeys(s.dataset for s in scores))
    markdown = markdown_table(scores, models, datasets)
    atomic_write_text(out / "comparison.md", markdown)
    atomic_write_text(out / "comparison.csv", _csv(scores, models))
    plot_comparison(scores, models, datasets, out / "comparison.png")
    return ComparisonReport(list(scores), markdown, out / "comparison.md", out / "comparison.csv",
                            out / "comparison.png")


def pair_key(model: str) -> str:
    """The baseline a model pairs with: its name without `_equimod`."""
    return model.replace(EQUIMOD_MARK, "", 1)


def paired_order(models: Sequence[str]) -> list[str]:
    """Models in first-seen order of their pair, each baseline right before its EquiMod variant."""
    unique = list(dict.fromkeys(models))
    pairs = list(dict.fromkeys(pair_key(m) for m in unique))
    return [m for p in pairs for m in sorted((m for m in unique if pair_key(m) == p), key=lambda m: EQUIMOD_MARK in m)]


def markdown_table(scores: Sequence[Score], models: Sequence[str], datasets: Sequence[str]) -> str:
    cell = {(s.model, s.dataset): s for s in scores}
    metric = {s.dataset: s.metric for s in scores}
    protocols = sorted({s.protocol for s in scores})
    header = ["model", *(f"{d} ({METRIC_LABELS.get(metric[d], metric[d])})" for d in datasets)]
    lines = [f"Transfer, {', '.join(protocols)} protocol; scores in percent.", "",
             "| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(datasets)) + "|"]
    for model in models:
        values = [f"{cell[model, d].value:.2f}" if (model, d) in cell else "-" for d in datasets]
        lines.append(f"| {model} | " + " | ".join(values) + " |")
        baseline = pair_key(model)
        if baseline != model and baseline in models:
            deltas = [f"{cell[model, d].value - cell[baseline, d].value:+.2f}"
                      if (model, d) in cell and (baseline, d) in cell else "-" for d in datasets]
            lines.append(f"| *EquiMod gain over {baseline}* | " + " | ".join(deltas) + " |")
    return "\n".join(lines) + "\n"


def plot_comparison(scores: Sequence[Score], models: Sequence[str], datasets: Sequence[str], path: str | Path) -> None:
    """Grouped bars, one group per dataset; a pair shares a hue, dark for EquiMod, light for its baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cell = {(s.model, s.dataset): s.value for s in scores}
    pairs = list(dict.fromkeys(pair_key(m) for m in models))
    palette = plt.get_cmap("tab20").colors  # (dark, light) colour pairs
    width = 0.8 / len(models)
    figure, axes = plt.subplots(figsize=(max(6.0, 1.2 + len(datasets) * (0.5 + 0.35 * len(models))), 4.5), dpi=120)
    for i, model in enumerate(models):
        family = pairs.index(pair_key(model)) % 10
        colour = palette[2 * family + (0 if EQUIMOD_MARK in model else 1)]
        xs = [j + (i - (len(models) - 1) / 2) * width for j, d in enumerate(datasets) if (model, d) in cell]
        ys = [cell[model, d] for d in datasets if (model, d) in cell]
        bars = axes.bar(xs, ys, width, label=model, color=colour, edgecolor="black", linewidth=0.4,
                        hatch="//" if EQUIMOD_MARK in model else None)
        axes.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    metric = {s.dataset: METRIC_LABELS.get(s.metric, s.metric) for s in scores}
    axes.set_xticks(range(len(datasets)), [f"{d}\n({metric[d]})" for d in datasets])
    axes.set_ylabel("score (%)")
    axes.set_ylim(0, min(100.0, max(cell.values()) * 1.15 + 1))
    axes.set_title(f"Transfer ({', '.join(sorted({s.protocol for s in scores}))}): EquiMod beside its baseline")
    axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=min(len(models), 3), frameon=False)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)


def parse_data_dir_map(text: str | None) -> dict[str, str]:
    """`flowers102=../data/flowers102,cub200=../data/cub` as a dict."""
    mapping: dict[str, str] = {}
    for item in split_list(text or "", "--data-dir-map", allow_empty=True):
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise ValueError(f"--data-dir-map: {item!r} is not DATASET=DIR")
        mapping[name.strip()] = folder.strip()
    return mapping


def split_list(text: str, option: str, *, allow_empty: bool = False) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items and not allow_empty:
        raise ValueError(f"{option}: give at least one name")
    return items


def _csv(scores: Sequence[Score], models: Sequence[str]) -> str:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(("model", "baseline", "dataset", "protocol", "metric", "score", "resolution", "weights_sha256"))
    order = {m: i for i, m in enumerate(models)}
    for s in sorted(scores, key=lambda s: (s.dataset, order[s.model])):
        baseline = pair_key(s.model) if pair_key(s.model) != s.model else ""
        writer.writerow((s.model, baseline, s.dataset, s.protocol, s.metric, f"{s.value:.4f}",
                         s.resolution if s.resolution is not None else "", s.weights_sha256))
    return buffer.getvalue()
