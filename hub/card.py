"""The model card (README.md) of an exported model: Hugging Face front matter plus the facts.

Every number on a card comes from the records of its weights' sha256 (`equimod_zoo.records`, each
with the command that produced it) or from the exported folder's files (the run's log and probe
report). The paper's figures appear only as the paper's, labelled with their source.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from huggingface_hub import EvalResult, ModelCardData

from equimod_zoo.constants import CIFAR_ARCHITECTURES, CONFIG_FILE, PAPER_ID, WEIGHTS_FILE
from equimod_zoo.data.known import data_caveats
from equimod_zoo.data.known import known_dataset as dataset_info
from equimod_zoo.dataclass_dict import plain
from equimod_zoo.model_folder import ModelConfig, family_of
from equimod_zoo.model_metadata import ModelMetadata
from equimod_zoo.paper import paper_result, paper_source
from equimod_zoo.records import Record
from equimod_zoo.yaml_io import dump_yaml

PAPER_URL = "https://arxiv.org/abs/2211.01244"
PAPER_EPOCHS = 800
CITATION = """@inproceedings{devillers2023equimod,
  title     = {EquiMod: An Equivariance Module to Improve Visual Instance Discrimination},
  author    = {Devillers, Alexandre and Lefort, Mathieu},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2023},
  url       = {https://arxiv.org/abs/2211.01244}
}"""

# timm model families (equimod_zoo.model_folder.MODEL_ARGS) as a card names them, and as a Hub tag.
FAMILY_TITLES = {"resnet": "ResNet", "convnext": "ConvNeXt", "vision_transformer": "Vision Transformer"}
FAMILY_TAGS = {"resnet": "resnet", "convnext": "convnext", "vision_transformer": "vision-transformer"}
METRIC_TITLES = {"top1": "top-1 accuracy", "top5": "top-5 accuracy", "knn_top1": "k-NN top-1 accuracy",
                 "mean_per_class_accuracy": "mean per-class accuracy"}
PROTOCOL_TITLES = {"linear": "linear probe on frozen features", "knn": "k-NN classifier on frozen features",
                   "finetune": "full fine-tuning"}


def _method_title(meta: ModelMetadata, unknown: str = "unknown") -> str:
    return meta.method.title if meta.method else unknown


@dataclass(frozen=True)
class CardFacts:
    """What a card says beyond config.json: facts read from the exported files and the source run."""

    repo_id: str
    weights_dtype: str  # "float32" or "float16"
    num_parameters: int
    records: tuple[Record, ...] = ()  # measured on exactly these weights
    published: bool = False  # whether repo_id exists on the Hub (the card then shows `hf-hub:` usage)
    heads_file: str | None = None
    zoo_name: str | None = None
    recipe_yaml: str | None = None  # the run's recipe.yaml
    final_log_row: dict[str, str] | None = None  # the last row of the run's log.csv
    probe_file: str | None = None
    probe_summary: dict[str, Any] | None = None  # the source folder's probe_augs.json


def card_metadata(config: ModelConfig, facts: CardFacts) -> ModelCardData:
    """The YAML front matter: library, license, tags, datasets and a model-index of the measured results."""
    meta = config.equimod
    method = meta.method
    data = _data_name(meta)
    method_tags = [method.base.replace("_", "-"), *(["equimod"] if method.equimod else [])] if method else []
    family = family_of(config.architecture)
    tags = ["image-feature-extraction", "timm", "self-supervised", "equimod-zoo", *method_tags,
            *([FAMILY_TAGS[family]] if family else [])]
    train_info = dataset_info(data) if data else None
    datasets = [train_info.hub_id] if train_info and train_info.hub_id else []
    eval_results = [
        EvalResult(
            task_type="image-classification",
            task_name=f"{PROTOCOL_TITLES.get(m.protocol, m.protocol)} ({m.protocol})",
            dataset_type=dataset_info(m.dataset).hub_id or m.dataset,
            dataset_name=dataset_info(m.dataset).title,
            dataset_split=m.split,
            metric_type="accuracy",
            metric_value=m.value,
            metric_name=f"{m.protocol} {METRIC_TITLES.get(m.metric, m.metric)}",
        )
        for m in facts.records
    ]
    return ModelCardData(
        library_name="timm",
        license=config.pretrained_cfg.get("license"),
        tags=tags,
        datasets=datasets or None,
        pipeline_tag="image-feature-extraction",
        model_name=facts.repo_id if eval_results else None,
        eval_results=eval_results or None,
    )


def render_card(config: ModelConfig, facts: CardFacts) -> str:
    """The whole README.md."""
    front = card_metadata(config, facts).to_yaml()
    sections = [
        f"# {facts.repo_id}\n\n{summary(config, facts)}",
        _details(config, facts),
        _usage(config, facts),
        _recipe(config, facts),
        _evaluation(config, facts),
        _probe(facts),
        _provenance(config),
        _limitations(config),
        f"## Citation\n\n```bibtex\n{CITATION}\n```",
    ]
    return f"---\n{front}\n---\n\n" + "\n\n".join(s for s in sections if s) + "\n"


def summary(config: ModelConfig, facts: CardFacts) -> str:
    """One paragraph: what the backbone is and how far it was trained. MODEL_CARDS.md quotes it."""
    meta = config.equimod
    method = _method_title(meta, "an unknown method")
    data = _data_name(meta)
    epochs = meta.epochs
    trained = f"for {epochs} epochs" if epochs is not None else "for an unrecorded number of epochs"
    steps = f"{meta.steps} steps; " if meta.steps is not None else ""
    on = f" on {dataset_info(data).title}" if data else ""
    measured = ("; measured: " + ", ".join(_metric_phrase(m) for m in facts.records)) if facts.records else \
        "; no evaluation has been recorded for these weights yet"
    return (f"A `{config.architecture}` backbone pre-trained with {method}{on} {trained} "
            f"({steps}the paper trains for {PAPER_EPOCHS}), exported as a headless timm model that returns "
            f"{config.num_features}-d features{measured}.")


def _steps(meta: ModelMetadata) -> str:
    return f" ({meta.steps} steps)" if meta.steps is not None else ""


def _metric_phrase(m: Record) -> str:
    return f"{dataset_info(m.dataset).title} {m.protocol} {m.metric} {m.value:.2f}%"


def _data_name(meta: ModelMetadata) -> str:
    return meta.data.name if meta.data else ""


def _data_description(meta: ModelMetadata) -> str:
    return (meta.data.description if meta.data else "") or _data_name(meta)


def _details(config: ModelConfig, facts: CardFacts) -> str:
    meta, cfg = config.equimod, config.pretrained_cfg
    rows = [
        ("Architecture", f"`{config.architecture}` (timm {FAMILY_TITLES.get(family_of(config.architecture), 'model')})"
         + (f", `model_args` {json.dumps(config.model_args)}" if config.model_args else "")),
        ("Method", _method_title(meta)),
        ("Pre-training data", _data_description(meta) or "unknown"),
        ("Training images", meta.data.num_images if meta.data and meta.data.num_images is not None else "unknown"),
        ("Parameters", f"{facts.num_parameters / 1e6:.2f} M ({facts.weights_dtype})"),
        ("Output", f"{config.num_features}-d features ({config.global_pool} pooling), no classifier"),
        ("Input", f"{tuple(cfg.get('input_size', ()))}, {cfg.get('interpolation')} resize, crop_pct "
                  f"{cfg.get('crop_pct')} ({cfg.get('crop_mode')}), mean {tuple(cfg.get('mean', ()))}, "
                  f"std {tuple(cfg.get('std', ()))}"),
        ("Files", ", ".join(f"`{f}`" for f in (WEIGHTS_FILE, CONFIG_FILE, facts.heads_file,
                                               facts.probe_file) if f)),
        ("Paper", f"[{PAPER_ID}]({PAPER_URL})"),
        ("License", cfg.get("license", "unknown")),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    heads = (f"\n\n`{facts.heads_file}` holds the pre-training heads (projection, augmentation-parameter "
             "encoder and equivariance predictor, with the parameter standardisation when the run saved it) "
             "for anyone who wants to continue training or study the equivariant space; timm does not read it."
             if facts.heads_file else "")
    return f"## Model details\n\n| | |\n|---|---|\n{table}{heads}"


def _usage(config: ModelConfig, facts: CardFacts) -> str:
    cifar = config.architecture in CIFAR_ARCHITECTURES
    register = ("import equimod_zoo  # registers the CIFAR-stem ResNets with timm: needed before create_model\n"
                if cifar else "")
    # `hf-hub:` only for a repository that exists; until then the folder loads from disk.
    source = f"hf-hub:{facts.repo_id}" if facts.published else "local-dir:PATH/TO/THIS/FOLDER"
    if facts.zoo_name:
        zoo_line = f'model = equimod_zoo.load("{facts.zoo_name}")  # the same model through the zoo\n'
    elif facts.published:
        zoo_line = (f'model = equimod_zoo.load(huggingface_hub.snapshot_download("{facts.repo_id}"))'
                    "  # same, via the zoo\n")
    else:
        zoo_line = 'model = equimod_zoo.load("PATH/TO/THIS/FOLDER")  # same, via the zoo\n'
    note = ("This architecture has a CIFAR stem (3x3 stride-1 conv1, no max-pool), which timm does not ship: "
            "`import equimod_zoo` registers it before `timm.create_model`." if cifar else
            "The architecture is stock timm; `equimod_zoo` is only needed for its extras.")
    if not facts.published:
        note += (f" `{facts.repo_id}` is not published on the Hugging Face Hub yet: load this folder from disk.")
    code = (
        "import timm\nimport torch\n" + (register or "") +
        f'\nmodel = timm.create_model("{source}", pretrained=True).eval()\n'
        "data_config = timm.data.resolve_model_data_config(model)\n"
        "transform = timm.data.create_transform(**data_config, is_training=False)\n\n"
        "with torch.no_grad():\n"
        "    x = transform(image).unsqueeze(0)  # image: a PIL image\n"
        "    features = model.forward_head(model.forward_features(x), pre_logits=True)"
        f"  # (1, {config.num_features})\n"
    )
    hub_import = "import huggingface_hub\n" if facts.published and not facts.zoo_name else ""
    zoo = "import equimod_zoo\n" + hub_import + "\n" + zoo_line
    return f"## Usage\n\n{note}\n\n```python\n{code}```\n\nWith `equimod-zoo` installed:\n\n```python\n{zoo}```"


def _recipe(config: ModelConfig, facts: CardFacts) -> str:
    meta = config.equimod
    keys = ("method", "recipe", "epochs", "steps", "batch_size", "seed")
    lines = [f"- {k}: `{getattr(meta, k)}`" for k in keys if getattr(meta, k) is not None]
    compute = meta.compute
    if compute is not None and compute.seconds_per_epoch:
        lines.append(f"- training time: {compute.seconds_per_epoch:.2f} s per epoch on {compute.hardware} "
                     f"({compute.train_seconds:.0f} s in all: the wall time of the training loop, "
                     "without data decoding or evaluation)")
    if meta.converted_from is not None:
        lines.append(f"- converted from a foreign checkpoint: `{json.dumps(plain(meta.converted_from))}`")
    recipe = facts.recipe_yaml or (dump_yaml(meta.recipe_config, sort_keys=False)
                                   if meta.recipe_config else None)
    text = "## Training recipe\n\n" + ("\n".join(lines) or "No training metadata was recorded.")
    if recipe:
        text += f"\n\nThe resolved recipe:\n\n```yaml\n{recipe.strip()}\n```"
    if facts.final_log_row:
        row = ", ".join(f"{k} {v}" for k, v in facts.final_log_row.items())
        text += f"\n\nLast row of the training log (`log.csv` of `equimod-zoo train`): {row}."
    return text


def _evaluation(config: ModelConfig, facts: CardFacts) -> str:
    results = facts.records
    if not results:
        return ("## Evaluation\n\nNo evaluation has been recorded for these weights yet. Numbers appear here "
                "only once an evaluation command (`equimod-zoo linear`, `equimod-zoo transfer`...) has "
                "measured them on exactly these weights.")
    rows = "\n".join(
        f"| {dataset_info(m.dataset).title} ({m.split}) | "
        f"{PROTOCOL_TITLES.get(m.protocol, m.protocol)} | {METRIC_TITLES.get(m.metric, m.metric)} | {m.value:.2f} | "
        f"`{m.command}` | {m.date} |"
        for m in results
    )
    text = ("## Evaluation\n\nEach number was measured on exactly these weights (sha256 in Provenance) by "
            "the command beside it, run from the root of the equimod-zoo repository with `$EQUIMOD_DATA` the data "
            "folder.\n\n| dataset | protocol | metric | value (%) | command | date |\n"
            f"|---|---|---|---|---|---|\n{rows}")
    meta = config.equimod
    paper = paper_result(meta.method, _data_name(meta), config.architecture) if meta.method else None
    if paper is not None:
        text += (f"\n\nFor reference, the paper reports {paper.top1:.2f}% linear top-1 ({paper.top5:.2f}% top-5) "
                 f"for {paper.method.title} in this setting after {paper.epochs} epochs ({paper_source()}); "
                 "that is the paper's figure, not a measurement of these weights.")
    return text


def _probe(facts: CardFacts) -> str:
    """The augmentation-probe report of `equimod-zoo probe-augs --json` (or any table-like JSON summary)."""
    probe = facts.probe_summary
    if not probe:
        return ""
    inputs = probe.get("inputs")
    if isinstance(inputs, dict) and inputs:
        table = _probe_scores(inputs)
    else:
        table = _generic_table(probe)
    setting = ", ".join(f"{k} {probe[k]}" for k in ("dataset", "split", "num_images", "seed") if k in probe)
    equivariance = probe.get("equivariance")
    eq_line = ""
    if isinstance(equivariance, dict):
        numbers = [f"{k} {_cell(v)}" for k, v in equivariance.items() if isinstance(v, (int, float))]
        eq_line = f"\n\nEquivariance of the EquiMod heads on the same images: {', '.join(numbers)}." if numbers else ""
    command = f"Measured by `{probe.get('command') or _probe_command(probe, facts)}`"
    return (f"## Augmentation probes\n\nHow much of each augmentation parameter the frozen features keep: a "
            f"held-out probe score per parameter, with its 95% interval (from `{facts.probe_file}`).\n\n"
            f"{table}{eq_line}\n\n{command}" + (f" ({setting})." if setting else "."))


# probe-augs options that the report records, so the card can spell out the command that reproduces it.
_PROBE_OPTIONS = (("dataset", "--dataset"), ("split", "--split"), ("num_images", "--num-images"),
                  ("augmentations_per_image", "--augs-per-image"), ("resolution", "--resolution"), ("seed", "--seed"))


def _probe_command(probe: dict[str, Any], facts: CardFacts) -> str:
    model = facts.zoo_name or facts.repo_id
    options = " ".join(f"{flag} {probe[key]}" for key, flag in _PROBE_OPTIONS if probe.get(key) is not None)
    return f"equimod-zoo probe-augs --model {model} {options} --data-dir DATA_DIR".replace("  ", " ")


def _probe_scores(inputs: dict[str, Any]) -> str:
    kinds = [k for k, v in inputs.items() if isinstance(v, dict)]
    params = list(dict.fromkeys(p for k in kinds for p in inputs[k]))
    rows = []
    for param in params:
        scores = [inputs[k].get(param) for k in kinds]
        metric = next((s.get("metric") for s in scores if isinstance(s, dict) and s.get("metric")), "")
        rows.append(f"| {param} | {metric} | " + " | ".join(_score(s) for s in scores) + " |")
    header = "| parameter | metric | " + " | ".join(f"from {k}" for k in kinds) + " |\n|" + "---|" * (2 + len(kinds))
    return header + "\n" + "\n".join(rows)


def _score(score: Any) -> str:
    if not isinstance(score, dict) or score.get("value") is None:
        return "—"
    interval = (f" [{_cell(score['ci_low'])}, {_cell(score['ci_high'])}]"
                if score.get("ci_low") is not None and score.get("ci_high") is not None else "")
    return f"{_cell(score['value'])}{interval}"


def _generic_table(probe: dict[str, Any]) -> str:
    rows = next((v for v in probe.values() if isinstance(v, list) and v and all(isinstance(r, dict) for r in v)),
                None)
    if rows is None:
        rows = [{"name": k, "value": v} for k, v in probe.items() if isinstance(v, (int, float))]
    columns = list(dict.fromkeys(k for r in rows for k in r if not isinstance(r[k], (dict, list))))
    body = "\n".join("| " + " | ".join(_cell(r.get(c, "")) for c in columns) + " |" for r in rows)
    return "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n" + body


def _cell(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def epochs_in_cycles(meta: ModelMetadata) -> str | None:
    """"N epochs in K cycles" from a model's metadata (`cycles`: one row per training cycle)."""
    if meta.epochs is None:
        return None
    cycles = meta.num_cycles  # a model from before cycles were recorded: one
    return f"{meta.epochs} epochs in {cycles} cycle{'s' if cycles != 1 else ''}"


def _provenance(config: ModelConfig) -> str:
    meta = config.equimod
    rows = [
        ("Training", epochs_in_cycles(meta)),
        ("Source commit", meta.source_commit),
        ("Training data", _data_description(meta) or None),
        ("Training data sha256", meta.data.sha256 if meta.data else None),
        ("Weights sha256 (`model.safetensors`)", meta.weights_sha256),
    ]
    lines = "\n".join(f"- {k}: `{v}`" if v else f"- {k}: not recorded" for k, v in rows)
    return f"## Provenance\n\n{lines}"


def _limitations(config: ModelConfig) -> str:
    meta = config.equimod
    epochs = meta.epochs
    if epochs is None:
        schedule = (f"The number of pre-training epochs was not recorded; the paper trains for {PAPER_EPOCHS}, "
                    "so do not assume these weights match the paper.")
    elif epochs < PAPER_EPOCHS:
        schedule = (f"Trained for {epochs} epochs{_steps(meta)}, {100 * epochs / PAPER_EPOCHS:.1f}% of the paper's "
                    f"{PAPER_EPOCHS}-epoch schedule: expect accuracies below the paper's figures.")
    else:
        schedule = f"Trained for {epochs} epochs, the paper's schedule is {PAPER_EPOCHS}."
    described = f"{_data_name(meta)} {meta.data.description if meta.data else ''}".lower()
    caveats = data_caveats(described)
    items = [
        schedule,
        *caveats,
        "A self-supervised feature extractor, not a classifier: it has no labels and needs a probe or "
        "fine-tuning for any task.",
        "Evaluated only where the Evaluation section says; behaviour on other data is unmeasured.",
    ]
    return "## Limitations\n\n" + "\n".join(f"- {item}" for item in items)
