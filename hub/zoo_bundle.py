"""Add an exported model folder to the zoo: a bundled copy, its records and its catalogue row.

    equimod-zoo zoo-add FOLDER --name NAME [--records DIR] [--probe-report FILE] [--hf-hub-id ORG/NAME]

The maintainer's command, and the only one that edits the zoo (publish and convert never do).
The folder is copied to `equimod_zoo/zoo/models/NAME/`, the records of its weights are copied
from DIR into `equimod_zoo/zoo/records/`, and the catalogue entry NAME is set to what the folder
proves: available, its weights' sha256, the epochs it was trained for, and the Hub repository
once one was published. A name not yet in the catalogue gets a new entry built from the folder's
metadata. The bundled card is generated from the folder and the records, like every card.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from equimod_zoo import registry
from equimod_zoo.atomic import atomic_write_text, move_into_place, staging_dir
from equimod_zoo.constants import CARD_FILE, CONFIG_FILE, HEADS_FILE, PROBE_FILE, WEIGHTS_FILE
from equimod_zoo.errors import UserError
from equimod_zoo.hub.card import PAPER_EPOCHS
from equimod_zoo.hub.export import EXPORT_FILES, WRITTEN_BY, check_repo_id, folder_card, probe_report_for
from equimod_zoo.hub.staging import check_output
from equimod_zoo.model_folder import ModelConfig, sha256_file
from equimod_zoo.model_metadata import ModelMetadata
from equimod_zoo.records import add_records, check_records_dirs, read_records
from equimod_zoo.registry import BUNDLED_MODELS_DIR, CATALOGUE_FILE, RECORDS_DIR_NAME, Catalogue, ZooEntry

MAX_BUNDLED_MB = 256  # tracked weights stay under this (DEVELOPERS.md)
HUB_ORG = "equimod-zoo"  # the organisation a bundled model's card names until it is published elsewhere


def add_to_zoo(
    folder: str | Path,
    name: str,
    *,
    hf_hub_id: str | None = None,
    records_dirs: Sequence[str | Path] = (),
    probe_report: str | Path | None = None,
    catalogue_path: str | Path = CATALOGUE_FILE,
    models_dir: str | Path = BUNDLED_MODELS_DIR,
    max_weights_mb: float = MAX_BUNDLED_MB,
) -> ZooEntry:
    """Bundle `folder` as zoo entry `name`; returns the entry as now written to the catalogue.

    Args:
        folder: an exported model folder (`equimod-zoo publish ... --dry-run` writes one).
        name: the zoo entry, existing or new.
        hf_hub_id: the Hub repository the folder was published to (default: the one the folder's config.json
            records, which an export writes only for an upload).
        records_dirs: records folders holding measurements of these weights, copied into the zoo's records.
        probe_report: a `probe-augs --json` file of these weights, bundled as probe_augs.json.
    """
    folder, catalogue_path, models_dir = Path(folder), Path(catalogue_path), Path(models_dir)
    if not name or Path(name).name != name or name.startswith("."):
        raise UserError(f"--name {name!r}: expected a plain name such as simclr_equimod_r18_cifar10")
    if hf_hub_id is not None:
        check_repo_id(hf_hub_id, option="--hf-hub-id")
    check_records_dirs(records_dirs)
    config = ModelConfig.read(folder)
    sha = sha256_file(folder / WEIGHTS_FILE)
    if config.equimod.weights_sha256 != sha:
        raise UserError(f"{folder / CONFIG_FILE}: weights_sha256 does not match {folder / WEIGHTS_FILE} ({sha})")
    size_mb = sum((folder / f).stat().st_size for f in (WEIGHTS_FILE, HEADS_FILE) if (folder / f).is_file()) / 2**20
    if size_mb > max_weights_mb:
        raise UserError(f"{folder}: {size_mb:.0f} MB of weights is over the {max_weights_mb:.0f} MB a bundled "
                        "model may track; export with --dtype fp16 or --no-heads, or publish it to the Hub only")
    probe = probe_report_for(Path(probe_report), sha) if probe_report is not None else None
    records = [r for d in records_dirs for r in read_records(d, sha)]
    rows = json.loads(catalogue_path.read_text())
    index = next((i for i, row in enumerate(rows) if row["name"] == name), None)
    current = rows[index] if index is not None else None
    row = _entry_row(config, name, sha, current, hf_hub_id or config.equimod.hf_hub_id, folder)
    if index is None:
        rows.append(row)
    else:
        rows[index] = row
    # Validate the whole catalogue before touching anything: unknown method, clashing names...
    entry = Catalogue(tuple(ZooEntry.from_dict(r) for r in rows)).get(name)
    target = models_dir / name
    check_output(target, kind=WRITTEN_BY, files=EXPORT_FILES, sources=[folder], overwrite=True, option="--name")
    records_dir = catalogue_path.parent / RECORDS_DIR_NAME
    if records:
        add_records(records_dir, records)
    _bundle_folder(folder, target, entry, probe, records_dir)
    atomic_write_text(catalogue_path, json.dumps(rows, indent=2) + "\n")
    if catalogue_path.resolve() == CATALOGUE_FILE.resolve():
        registry.catalogue.cache_clear()
    return Catalogue.from_file(catalogue_path).get(name)


def bundled_card(entry: ZooEntry, folder: Path, records_dir: Path) -> str:
    """The card of a bundled folder: generated from its files, its catalogue entry and the zoo's records."""
    config = ModelConfig.read(folder)
    sha = sha256_file(folder / WEIGHTS_FILE)
    if sha != entry.sha256:
        raise UserError(f"{folder / WEIGHTS_FILE}: sha256 {sha} is not the catalogue's {entry.sha256} for "
                        f"{entry.name}")
    return folder_card(folder, config, repo_id=entry.hf_hub_id or f"{HUB_ORG}/{entry.name}", zoo_name=entry.name,
                       published=entry.hf_hub_id is not None, records=read_records(records_dir, sha))


def _entry_row(config: ModelConfig, name: str, sha: str, current: dict[str, Any] | None, hf_hub_id: str | None,
               folder: Path) -> dict[str, Any]:
    meta = config.equimod
    method = meta.method.name if meta.method else None
    if current is not None:
        for key, value in (("arch", config.architecture), ("method", method)):
            if value is not None and current[key] != value:
                raise UserError(f"{folder / CONFIG_FILE}: {key} {value!r} differs from zoo entry {name!r} "
                                f"({current[key]!r}); choose another --name")
        row = dict(current)
    else:
        if method is None:
            raise UserError(f"{folder / CONFIG_FILE}: no equimod.method, needed for a new zoo entry {name!r}")
        row = {
            "name": name, "arch": config.architecture, "tag": name, "method": method,
            "data": meta.data.name if meta.data else "",
            "num_train_images": (meta.data.num_images or 0) if meta.data else 0,
            "epochs": 0, "recipe": meta.recipe or "", "license": config.pretrained_cfg.get("license", ""),
            "status": "available", "aliases": [], "notes": "",
        }
    # A Hub id that served other weights would fail its sha256 check: keep it only for these weights.
    keep_hub = current is not None and current.get("sha256") == sha
    row.update(
        status="available",
        folder=name,
        sha256=sha,
        hf_hub_id=hf_hub_id or (current.get("hf_hub_id") if keep_hub else None),
    )
    # What these weights were trained with replaces what the entry planned.
    if meta.data and meta.data.num_images:
        row["num_train_images"] = meta.data.num_images
    if meta.recipe:
        row["recipe"] = meta.recipe
    if meta.epochs is not None:
        row["epochs"] = meta.epochs
    row["notes"] = _training_note(meta)
    return row


def _training_note(meta: ModelMetadata) -> str:
    steps = f", {meta.steps} steps" if meta.steps else ""
    images = meta.data.num_images if meta.data and meta.data.num_images is not None else "?"
    data = meta.data.name if meta.data else "unknown data"
    return (f"Trained by equimod-zoo with recipe {meta.recipe or '?'} for "
            f"{meta.epochs if meta.epochs is not None else '?'} epochs{steps} at batch "
            f"{meta.batch_size if meta.batch_size is not None else '?'} on {images} images ({data}); the paper "
            f"trains for {PAPER_EPOCHS} epochs.")


def _bundle_folder(folder: Path, target: Path, entry: ZooEntry, probe: dict[str, Any] | None,
                   records_dir: Path) -> None:
    """Copy what an export writes (the card is generated anew), the probe report named for the entry."""
    with staging_dir(target) as stage:
        for name in EXPORT_FILES:
            if name != CARD_FILE and (folder / name).is_file():
                shutil.copyfile(folder / name, stage / name)
        if probe is not None:
            atomic_write_text(stage / PROBE_FILE, json.dumps({**probe, "model": entry.name}, indent=2) + "\n")
        elif (stage / PROBE_FILE).is_file():  # a copied report names the zoo entry, not a path on some machine
            report = json.loads((stage / PROBE_FILE).read_text())
            atomic_write_text(stage / PROBE_FILE, json.dumps({**report, "model": entry.name}, indent=2) + "\n")
        (stage / CARD_FILE).write_text(bundled_card(entry, stage, records_dir), encoding="utf-8")
        move_into_place(stage, target)
