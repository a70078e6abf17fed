"""Comparison of models across datasets: a markdown table, a CSV and a bar chart.

Models pair by what they are, read from the registry (a zoo name or alias) or from a model
folder's config.json: an EquiMod model sits beside the model of its base method (any base:
`simclr` for `simclr_equimod`, `vicreg` for `vicreg_equimod`) with the same architecture, training
data and budget, in the same colour family, so the chart shows what EquiMod adds. `write_comparison` takes plain `Score` rows, so
other result sources (e.g. augmentation-probe JSON files) can join the table without touching
the transfer code.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from equimod_zoo.atomic import atomic_path, atomic_write_text
from equimod_zoo.errors import UserError
from equimod_zoo.loading import resolve_model
from equimod_zoo.method import Method
from equimod_zoo.model_folder import ModelConfig
from equimod_zoo.optional import require
from equimod_zoo.output_folder import OutputLayout, check_output_folder
from equimod_zoo.registry import ZooEntry, catalogue
from equimod_zoo.transfer.run import transfer
from equimod_zoo.weights import local_folder

METRIC_LABELS = {"top1": "top-1", "mean_per_class_accuracy": "mean per-class"}


@dataclass(frozen=True)
class ModelIdentity:
    """What a model is, as far as pairing goes: its method, architecture, training data and budget."""

    method: Method
    architecture: str
    data: str
    budget: int | None  # training epochs

    @property
    def is_equimod(self) -> bool:
        return self.method.equimod

    @property
    def pair(self) -> tuple[str, str, str, int | None]:
        """What an EquiMod model and its baseline share: the base method, architecture, data and budget."""
        return self.method.base, self.architecture, self.data, self.budget

    @classmethod
    def of_entry(cls, entry: ZooEntry) -> ModelIdentity:
        return cls(entry.method, entry.arch, entry.data, entry.epochs)


def model_identity(model: str | Path) -> ModelIdentity | None:
    """The identity of a zoo name or alias (its registry row) or of a model folder (its config.json);
    None for a name or folder that does not say its method."""
    folder = local_folder(model)
    if folder is None:
        return registry_identity(str(model))
    config = ModelConfig.read(folder)
    meta = config.equimod
    sha256 = meta.weights_sha256
    entry = next((e for e in catalogue().entries if sha256 and e.sha256 == sha256), None)
    if entry is not None:  # a copy of a zoo model's folder is that zoo model
        return ModelIdentity.of_entry(entry)
    if meta.method is None:
        return None
    return ModelIdentity(meta.method, config.architecture, meta.data.name if meta.data else "", meta.epochs)


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
    identity: ModelIdentity | None = None  # default: looked up from `model` as a zoo name or alias


@dataclass
class ComparisonReport:
    scores: list[Score]
    markdown: str
    markdown_path: Path
    csv_path: Path
    png_path: Path
    probes_path: Path | None = None  # probes.md and probes.png, when probe-augs reports were given
    probes_png_path: Path | None = None


# What `compare` writes in OUT; OUT is new, empty, or an earlier comparison holding only these.
COMPARE_OUTPUT = OutputLayout(
    "compare", frozenset(("comparison.md", "comparison.csv", "comparison.png", "probes.md", "probes.png")),
    lambda folder: (folder / "comparison.csv").is_file())


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
    out = Path(out)
    check_output_folder(out, COMPARE_OUTPUT)  # before any work
    data_dirs = dict(data_dirs or {})
    unknown = sorted(set(data_dirs) - set(datasets))
    if unknown:
        raise UserError(f"--data-dir-map names {unknown[0]!r}, which is not in --datasets {list(datasets)}")
    # each model is located, verified and (when features must be extracted) built once, for all datasets
    resolved = [(resolve_model(model), model_identity(model)) for model in models]
    scores = []
    for dataset in datasets:
        for model, identity in resolved:
            result = transfer(dataset, model=model, data_dir=data_dirs.get(dataset), protocol=protocol, resolution=resolution,
                              cache_dir=cache_dir, reuse_result=reuse, num_workers=num_workers, device=device,
                              progress=progress)
            scores.append(Score(result.model, result.dataset, result.protocol, result.metric, result.score,
                                result.weights_sha256, result.resolution, identity))
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
        raise UserError("nothing to compare: no scores")
    out = Path(out)
    pairing = Pairing.of_scores(scores)
    datasets = list(dict.fromkeys(s.dataset for s in scores))
    markdown = markdown_table(scores, pairing, datasets)
    atomic_write_text(out / "comparison.md", markdown)
    atomic_write_text(out / "comparison.csv", _csv(scores, pairing))
    plot_comparison(scores, pairing, datasets, out / "comparison.png")
    return ComparisonReport(list(scores), markdown, out / "comparison.md", out / "comparison.csv",
                            out / "comparison.png")


@dataclass
class Pairing:
    """The compared models in table order, each EquiMod model right after its baseline."""

    models: list[str]  # display order
    identities: dict[str, ModelIdentity | None]

    @classmethod
    def of_scores(cls, scores: Sequence[Score]) -> Pairing:
        identities: dict[str, ModelIdentity | None] = {}
        for s in scores:
            if identities.get(s.model) is None:
                identities[s.model] = s.identity if s.identity is not None else registry_identity(s.model)
        return cls.of_identities(identities)

    @classmethod
    def of_names(cls, names: Sequence[str]) -> Pairing:
        """Zoo names or aliases, paired by their registry rows."""
        return cls.of_identities({name: registry_identity(name) for name in names})

    @classmethod
    def of_identities(cls, identities: dict[str, ModelIdentity | None]) -> Pairing:
        """Models in first-seen order of their pair, each baseline right before its EquiMod variant."""
        groups: dict[object, list[str]] = {}
        for model, identity in identities.items():
            groups.setdefault(_pair_key(model, identity), []).append(model)
        order = [m for group in groups.values()
                 for m in sorted(group, key=lambda m: identities[m] is not None and identities[m].is_equimod)]
        return cls(order, dict(identities))

    def baseline(self, model: str) -> str | None:
        """The compared model `model` adds EquiMod to, if any."""
        identity = self.identities.get(model)
        if identity is None or not identity.is_equimod:
            return None
        return next((m for m in self.models if (other := self.identities.get(m)) is not None
                     and not other.is_equimod and other.pair == identity.pair), None)

    def family(self, model: str) -> int:
        """The colour family: one per pair, in table order."""
        keys = list(dict.fromkeys(_pair_key(m, self.identities.get(m)) for m in self.models))
        return keys.index(_pair_key(model, self.identities.get(model)))

    def is_equimod(self, model: str) -> bool:
        identity = self.identities.get(model)
        return identity is not None and identity.is_equimod


def registry_identity(name: str) -> ModelIdentity | None:
    """The identity of a zoo name or alias from its registry row; None for any other name."""
    return ModelIdentity.of_entry(catalogue().get(name)) if name in catalogue() else None


def _pair_key(model: str, identity: ModelIdentity | None) -> object:
    return identity.pair if identity is not None else ("unpaired", model)


def markdown_table(scores: Sequence[Score], pairing: Pairing, datasets: Sequence[str]) -> str:
    cell = {(s.model, s.dataset): s for s in scores}
    metric = {s.dataset: s.metric for s in scores}
    protocols = sorted({s.protocol for s in scores})
    header = ["model", *(f"{d} ({METRIC_LABELS.get(metric[d], metric[d])})" for d in datasets)]
    lines = [f"Transfer, {', '.join(protocols)} protocol; scores in percent.", "",
             "| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(datasets)) + "|"]
    for model in pairing.models:
        values = [f"{cell[model, d].value:.2f}" if (model, d) in cell else "-" for d in datasets]
        lines.append(f"| {model} | " + " | ".join(values) + " |")
        baseline = pairing.baseline(model)
        if baseline is not None:
            deltas = [f"{cell[model, d].value - cell[baseline, d].value:+.2f}"
                      if (model, d) in cell and (baseline, d) in cell else "-" for d in datasets]
            lines.append(f"| *EquiMod gain over {baseline}* | " + " | ".join(deltas) + " |")
    return "\n".join(lines) + "\n"


def plot_comparison(scores: Sequence[Score], pairing: Pairing, datasets: Sequence[str], path: str | Path) -> None:
    """Grouped bars, one group per dataset; a pair shares a hue, dark for EquiMod, light for its baseline.

    Draws on its own `Figure` (no pyplot, no backend switch), so a notebook's plotting state is untouched.
    """
    Figure = require("matplotlib.figure", "plots", "compare's bar chart").Figure
    colormaps = require("matplotlib", "plots", "compare's bar chart").colormaps

    models = pairing.models
    cell = {(s.model, s.dataset): s.value for s in scores}
    palette = colormaps["tab20"].colors  # (dark, light) colour pairs
    width = 0.8 / len(models)
    figure = Figure(figsize=(max(6.0, 1.2 + len(datasets) * (0.5 + 0.35 * len(models))), 4.5), dpi=120)
    axes = figure.add_subplot()
    for i, model in enumerate(models):
        equimod = pairing.is_equimod(model)
        colour = palette[2 * (pairing.family(model) % 10) + (0 if equimod else 1)]
        xs = [j + (i - (len(models) - 1) / 2) * width for j, d in enumerate(datasets) if (model, d) in cell]
        ys = [cell[model, d] for d in datasets if (model, d) in cell]
        bars = axes.bar(xs, ys, width, label=model, color=colour, edgecolor="black", linewidth=0.4,
                        hatch="//" if equimod else None)
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


def parse_data_dir_map(text: str | None) -> dict[str, str]:
    """`flowers102=../data/flowers102,cub200=../data/cub` as a dict."""
    mapping: dict[str, str] = {}
    for item in split_list(text or "", "--data-dir-map", allow_empty=True):
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise UserError(f"--data-dir-map: {item!r} is not DATASET=DIR")
        mapping[name.strip()] = folder.strip()
    return mapping


def split_list(text: str, option: str, *, allow_empty: bool = False) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items and not allow_empty:
        raise UserError(f"{option}: give at least one name")
    return items


def _csv(scores: Sequence[Score], pairing: Pairing) -> str:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(("model", "baseline", "dataset", "protocol", "metric", "score", "resolution", "weights_sha256"))
    order = {m: i for i, m in enumerate(pairing.models)}
    for s in sorted(scores, key=lambda s: (s.dataset, order[s.model])):
        writer.writerow((s.model, pairing.baseline(s.model) or "", s.dataset, s.protocol, s.metric, f"{s.value:.4f}",
                         s.resolution if s.resolution is not None else "", s.weights_sha256))
    return buffer.getvalue()
