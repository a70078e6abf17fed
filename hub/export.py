"""Export a run or model folder as a Hugging Face model repository folder in timm's layout.

    OUT/model.safetensors            the headless backbone, timm key names (source dtype unless asked)
    OUT/config.json                  timm schema; EquiMod metadata under the top-level "equimod" key
    OUT/README.md                    the model card, every number from a command named beside it
    OUT/equimod_heads.safetensors    optional: the pre-training heads
    OUT/probe_augs.json              optional: the augmentation-probe summary

The card's numbers are the records of the exported weights' sha256 (`equimod_zoo.records`): the
zoo's and those of any records folder named. The folder is built beside OUT, checked (plain timm
reloads it and gives the source model's features), and only then renamed into place; an existing
OUT is replaced only when it is a previous export (hub/staging.py).
"""
from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import safetensors.torch
import timm
import torch
from huggingface_hub import ModelCard
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

import equimod_zoo
from equimod_zoo.atomic import atomic_write_text, move_into_place, staging_dir
from equimod_zoo.constants import CARD_FILE, CONFIG_FILE, HEADS_FILE, LOG_FILE, PAPER_ID, PROBE_FILE, RECIPE_FILE, WEIGHTS_FILE
from equimod_zoo.errors import UserError
from equimod_zoo.hub.card import CardFacts, render_card
from equimod_zoo.hub.staging import check_output
from equimod_zoo.json_file import read_json
from equimod_zoo.model_folder import ModelConfig, save_weights, sha256_file
from equimod_zoo.records import ZOO_RECORDS_DIR, Record, check_records_dirs, read_records
from equimod_zoo.run_folder import TRAINING_RECORD
from equimod_zoo.weights import locate_weights
from equimod_zoo.yaml_io import load_yaml

WRITTEN_BY = "export"  # config.json's equimod.written_by: marks a folder --overwrite may replace
EXPORT_FILES = (WEIGHTS_FILE, CONFIG_FILE, CARD_FILE, HEADS_FILE, PROBE_FILE, *TRAINING_RECORD)
DEFAULT_LICENSE = "apache-2.0"  # the zoo's license, for sources that do not name one
DTYPES = {"fp16": torch.float16, "fp32": torch.float32}
REQUIRED_DATA_CONFIG = ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std")
# Where the source's weights lived is not part of the exported config.
_LOCATION_KEYS = ("file", "hf_hub_id", "source", "url", "tag", "architecture")
_LOG_COLUMNS = ("step", "epoch", "loss", "loss_inv", "loss_eq", "eq_gain")
# Features of a plain-timm reload must match the source model this closely (relative to their scale).
_TOLERANCE = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 5e-2}


@dataclass(frozen=True)
class ExportResult:
    folder: Path
    weights_sha256: str
    weights_dtype: str
    num_results: int
    max_feature_diff: float  # plain timm reload vs the source model, on a seeded batch


def export_model(
    source: str | Path,
    out: str | Path,
    *,
    repo_id: str,
    dtype: Literal["fp16", "fp32"] | None = None,
    with_heads: bool | None = None,
    zoo_name: str | None = None,
    overwrite: bool = False,
    records_dirs: Sequence[str | Path] = (),
    published: bool = False,
) -> ExportResult:
    """Write `source` (a run folder, model folder or zoo name) as a Hub-ready folder at `out`.

    Args:
        source: anything `equimod_zoo.load` accepts; its weights' sha256 is checked first.
        out: the folder to create; refused if it exists unless `overwrite`.
        repo_id: `ORG/NAME`, used in the card's usage snippet and model-index.
        dtype: re-save the backbone in this precision; None keeps the source's.
        with_heads: copy equimod_heads.safetensors; None copies it when the source has one.
        zoo_name: the zoo entry the folder will be bundled as, for the card's usage snippet.
        overwrite: replace an existing `out` that is a previous export (only once the new folder has passed
            its checks); anything else at `out` is refused.
        records_dirs: records folders whose numbers for the exported weights go on the card (besides the zoo's).
        published: the folder is about to be uploaded to `repo_id`: the card shows `hf-hub:` usage and
            config.json records the repository.
    """
    check_repo_id(repo_id)
    if dtype is not None and dtype not in DTYPES:
        raise UserError(f"--dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    out = Path(out)
    check_records_dirs(records_dirs)
    located = locate_weights(source)
    src = located.weights.parent
    check_output(out, kind=WRITTEN_BY, files=EXPORT_FILES, sources=[src, *records_dirs], overwrite=overwrite)
    with staging_dir(out) as stage:
        config = _write_weights(located.weights, located.config, stage, dtype)
        sha = sha256_file(stage / WEIGHTS_FILE)
        heads = _copy_heads(src, stage, with_heads, dtype)
        _copy_probe(src, stage, sha)
        _copy_training_record(src, stage)
        config.equimod = config.equimod.replace(
            weights_sha256=sha, written_by=WRITTEN_BY,
            hf_hub_id=repo_id if published else None,  # a repository only once it exists
            heads=config.equimod.heads if heads else None)  # no heads file, no schema
        config.write(stage)
        records = records_of(sha, records_dirs)
        card = folder_card(stage, config, repo_id=repo_id, zoo_name=zoo_name, published=published, records=records)
        (stage / CARD_FILE).write_text(card, encoding="utf-8")
        weights_dtype = _weights_dtype(stage / WEIGHTS_FILE)
        diff = verify_reload(stage, source, weights_dtype=weights_dtype)
        move_into_place(stage, out)
    return ExportResult(folder=out, weights_sha256=sha, weights_dtype=str(weights_dtype).removeprefix("torch."),
                        num_results=len(records), max_feature_diff=diff)


def check_repo_id(repo_id: str, *, option: str = "--repo-id") -> None:
    """A Hub model repository ORG/NAME, by huggingface_hub's own rule (no `..`, no path, no shell characters)."""
    try:
        validate_repo_id(repo_id)
        valid = "/" in repo_id
    except HFValidationError:
        valid = False
    if not valid:
        raise UserError(f"{option} {repo_id!r}: not a Hugging Face repository id; expected ORG/NAME (letters, digits, "
                        f"'-', '_' and '.', at most 96 characters each, no '..' or '--')")


def records_of(weights_sha256: str, records_dirs: Sequence[str | Path] = ()) -> tuple[Record, ...]:
    """The records of these weights in `records_dirs`, then the zoo's; the first folder naming a measurement wins."""
    found: dict[tuple[str, str, str, str], Record] = {}
    for folder in (*records_dirs, ZOO_RECORDS_DIR):
        for record in read_records(folder, weights_sha256):
            found.setdefault(record.key, record)
    return tuple(found.values())


def folder_card(folder: Path, config: ModelConfig, *, repo_id: str, zoo_name: str | None, published: bool,
                records: Sequence[Record]) -> str:
    """The checked model card of an exported (or bundled) folder, from its files and the records of its weights."""
    weights_dtype = _weights_dtype(folder / WEIGHTS_FILE)
    probe = _read_probe(folder / PROBE_FILE) if (folder / PROBE_FILE).is_file() else None
    facts = CardFacts(
        repo_id=repo_id,
        weights_dtype=str(weights_dtype).removeprefix("torch."),
        records=tuple(records),
        published=published,
        num_parameters=_num_parameters(folder / WEIGHTS_FILE),
        heads_file=HEADS_FILE if (folder / HEADS_FILE).is_file() else None,
        zoo_name=zoo_name,
        recipe_yaml=_read_text(folder / RECIPE_FILE),
        final_log_row=_final_log_row(folder / LOG_FILE),
        probe_file=PROBE_FILE if probe is not None else None,
        probe_summary=probe,
    )
    card = render_card(config, facts)
    check_card(card, len(facts.records))
    return card


def verify_reload(folder: Path, source: str | Path, *, weights_dtype: torch.dtype, batch_size: int = 2) -> float:
    """Plain timm must reload `folder` and give `source`'s features on a seeded batch; returns the max diff."""
    reference = equimod_zoo.load(source).eval()
    try:
        exported = timm.create_model(f"local-dir:{folder.resolve()}", pretrained=True).eval()
    except (RuntimeError, KeyError, ValueError) as error:
        raise UserError(f"{folder}: plain timm cannot reload the exported folder: "
                        f"{str(error).strip().splitlines()[-1]}") from None
    size = tuple(reference.pretrained_cfg["input_size"])
    x = torch.randn((batch_size, *size), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference.forward_head(reference.forward_features(x), pre_logits=True)
        actual = exported.forward_head(exported.forward_features(x), pre_logits=True)
    if actual.shape != expected.shape:
        raise UserError(f"{folder}: plain timm gives features of shape {tuple(actual.shape)}, the source "
                        f"model {tuple(expected.shape)}")
    diff = float((actual - expected).abs().max())
    tolerance = _TOLERANCE.get(weights_dtype, 1e-4)
    scale = float(expected.abs().max()) or 1.0
    if not torch.allclose(actual, expected, rtol=tolerance, atol=tolerance * scale):
        raise UserError(f"{folder}: plain timm's reload gives other features than the source model "
                        f"(max abs diff {diff:.3g}, tolerance {tolerance:g} x scale {scale:.3g})")
    return diff


def check_card(card: str, num_records: int) -> None:
    """The front matter parses as YAML and huggingface_hub reads back every measured result."""
    front = card.split("---\n", 2)[1]
    if not isinstance(load_yaml(front, where="model card front matter"), dict):
        raise UserError("model card front matter is not a YAML mapping")
    parsed = ModelCard(card).data
    if len(parsed.eval_results or []) != num_records:
        raise UserError("model card model-index does not hold every measured result")


def _write_weights(weights: Path, source_config: ModelConfig, stage: Path, dtype: str | None) -> ModelConfig:
    """Copy (or re-save, when the dtype changes or a classifier must go) the backbone; the timm config."""
    state = safetensors.torch.load_file(str(weights))
    classifier = str(source_config.pretrained_cfg.get("classifier", "fc"))
    backbone = {k: v for k, v in state.items() if not k.startswith(f"{classifier}.")}
    target = DTYPES.get(dtype) if dtype else None
    resave = len(backbone) != len(state) or (
        target is not None and any(v.is_floating_point() and v.dtype != target for v in backbone.values()))
    if resave:
        save_weights(backbone, stage / WEIGHTS_FILE, dtype=target)
    else:
        shutil.copyfile(weights, stage / WEIGHTS_FILE)
    return _timm_config(source_config, weights.parent / CONFIG_FILE)


def _timm_config(source: ModelConfig, path: Path) -> ModelConfig:
    cfg = {k: v for k, v in source.pretrained_cfg.items() if k not in _LOCATION_KEYS}
    missing = [k for k in REQUIRED_DATA_CONFIG if k not in cfg]
    if missing:
        raise UserError(f"{path}: pretrained_cfg lacks {', '.join(missing)}; the card cannot state the data "
                        "config the backbone was trained with")
    cfg.update(num_classes=0, paper_ids=PAPER_ID, license=cfg.get("license") or DEFAULT_LICENSE)
    return ModelConfig(
        architecture=source.architecture,
        num_features=source.num_features,
        pretrained_cfg=cfg,
        global_pool=source.global_pool,
        model_args=dict(source.model_args),
        equimod=source.equimod,
    )


def _copy_heads(src: Path, stage: Path, with_heads: bool | None, dtype: str | None) -> str | None:
    present = (src / HEADS_FILE).is_file()
    if with_heads and not present:
        raise FileNotFoundError(f"{src / HEADS_FILE}: missing, so --with-heads cannot export it")
    if not present or with_heads is False:
        return None
    if dtype is None:
        shutil.copyfile(src / HEADS_FILE, stage / HEADS_FILE)
    else:  # the heads follow the backbone's precision
        save_weights(safetensors.torch.load_file(str(src / HEADS_FILE)), stage / HEADS_FILE, dtype=DTYPES[dtype])
    return HEADS_FILE


def _copy_training_record(src: Path, stage: Path) -> None:
    """recipe.yaml and log.csv travel with the weights, so a re-export still shows how they were trained."""
    for name in TRAINING_RECORD:
        if (src / name).is_file():
            shutil.copyfile(src / name, stage / name)


def _copy_probe(src: Path, stage: Path, sha: str) -> dict[str, Any] | None:
    """The source's probe report for these weights (one report, or the matching one of a comparison list)."""
    path = src / PROBE_FILE
    if not path.is_file():
        return None
    report = probe_report_for(path, sha)
    atomic_write_text(stage / PROBE_FILE, json.dumps(report, indent=2) + "\n")
    return report


def probe_report_for(path: Path, sha: str) -> dict[str, Any]:
    """The one report of `probe-augs --json` in `path` that was measured on the weights `sha`."""
    reports = read_json(path, expect=(dict, list))
    reports = reports if isinstance(reports, list) else [reports]
    if not all(isinstance(r, dict) for r in reports):
        raise UserError(f"{path}: expected a JSON object or a list of objects")
    matching = [r for r in reports if r.get("weights_sha256") == sha]  # unverifiable numbers stay off the card
    if len(matching) != 1:
        measured_on = ", ".join(str(r.get("weights_sha256")) for r in reports)
        raise UserError(f"{path}: measured on weights {measured_on}, not on the exported {WEIGHTS_FILE} ({sha})")
    return matching[0]


def _read_probe(path: Path) -> dict[str, Any]:
    return read_json(path)


def _weights_dtype(path: Path) -> torch.dtype:
    with safetensors.safe_open(str(path), framework="pt") as handle:
        for key in handle.keys():
            tensor = handle.get_slice(key)
            dtype = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}.get(tensor.get_dtype())
            if dtype is not None:
                return dtype
    return torch.float32


def _num_parameters(path: Path) -> int:
    with safetensors.safe_open(str(path), framework="pt") as handle:
        return sum(_numel(handle.get_slice(k).get_shape()) for k in handle.keys() if "num_batches_tracked" not in k
                   and not k.endswith(("running_mean", "running_var")))


def _numel(shape: list[int]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def _read_text(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.is_file() else None


def _final_log_row(path: Path) -> dict[str, str] | None:
    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return None
    last = rows[-1]
    return {k: _short_number(last[k]) for k in _LOG_COLUMNS if last.get(k) not in (None, "")}


def _short_number(text: str) -> str:
    try:
        value = float(text)
    except ValueError:
        return text
    return str(int(value)) if value.is_integer() else f"{value:.4g}"
