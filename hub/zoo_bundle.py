"""Add an exported model folder to the zoo: a bundled copy plus its catalogue row.

The folder is copied to `equimod_zoo/zoo/models/NAME/` and the catalogue entry NAME is set to
what the folder proves: available, its weights' sha256, the results measured on those weights,
the epochs it was trained for, and the Hub repository when it was published. A name not yet in
the catalogue gets a new entry built from the folder's metadata.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from equimod_zoo import registry
from equimod_zoo.atomic import atomic_write_text
from equimod_zoo.hub.export import move_into_place, staging_dir
from equimod_zoo.model_folder import CONFIG_FILE, HEADS_FILE, WEIGHTS_FILE, ModelConfig, sha256_file
from equimod_zoo.registry import BUNDLED_MODELS_DIR, CATALOGUE_FILE, Catalogue, ZooEntry

MAX_BUNDLED_MB = 256  # tracked weights stay under this (DEVELOPERS.md)


def add_to_zoo(
    folder: str | Path,
    name: str,
    *,
    hf_hub_id: str | None = None,
    catalogue_path: str | Path = CATALOGUE_FILE,
    models_dir: str | Path = BUNDLED_MODELS_DIR,
    max_weights_mb: float = MAX_BUNDLED_MB,
) -> ZooEntry:
    """Bundle `folder` as zoo entry `name`; returns the entry as now written to the catalogue."""
    folder, catalogue_path, models_dir = Path(folder), Path(catalogue_path), Path(models_dir)
    if not name or Path(name).name != name or name.startswith("."):
        raise ValueError(f"--zoo-entry {name!r}: expected a plain name such as simclr_equimod_r18_cifar10")
    config = ModelConfig.read(folder)
    sha = sha256_file(folder / WEIGHTS_FILE)
    if config.equimod.get("weights_sha256") != sha:
        raise ValueError(f"{folder / CONFIG_FILE}: weights_sha256 does not match {folder / WEIGHTS_FILE} ({sha})")
    size_mb = sum((folder / f).stat().st_size for f in (WEIGHTS_FILE, HEADS_FILE) if (folder / f).is_file()) / 2**20
    if size_mb > max_weights_mb:
        raise ValueError(f"{folder}: {size_mb:.0f} MB of weights is over the {max_weights_mb:.0f} MB a bundled "
                         "model may track; export with --dtype fp16 or --no-heads, or publish it to the Hub only")
    rows = json.loads(catalogue_path.read_text())
    index = next((i for i, row in enumerate(rows) if row["name"] == name), None)
    current = rows[index] if index is not None else None
    row = _entry_row(config, name, sha, current, hf_hub_id, folder)
    if index is None:
        rows.append(row)
    else:
        rows[index] = row
    # Validate the whole catalogue before touching anything: unknown method, clashing names...
    entry = Catalogue(tuple(ZooEntry.from_dict(r) for r in rows)).get(name)
    _copy_folder(folder, models_dir / name)
    atomic_write_text(catalogue_path, json.dumps(rows, indent=2) + "\n")
    if catalogue_path.resolve() == CATALOGUE_FILE.resolve():
        registry.catalogue.cache_clear()
    return entry


def _entry_row(config: ModelConfig, name: str, sha: str, current: dict[str, Any] | None, hf_hub_id: str | None,
               folder: Path) -> dict[str, Any]:
    meta = config.equimod
    method = meta.get("method")
    if current is not None:
        for key, value in (("arch", config.architecture), ("method", method)):
            if value is not None and current[key] != value:
                raise ValueError(f"{folder / CONFIG_FILE}: {key} {value!r} differs from zoo entry {name!r} "
                                 f"({current[key]!r}); choose another --zoo-entry")
        row = dict(current)
    else:
        if method is None:
            raise ValueError(f"{folder / CONFIG_FILE}: no equimod.method, needed for a new zoo entry {name!r}")
        data = meta.get("data") if isinstance(meta.get("data"), dict) else {}
        row = {
            "name": name, "arch": config.architecture, "tag": name, "method": method,
            "data": data.get("name", ""), "num_train_images": int(data.get("num_images") or 0),
            "epochs": 0, "recipe": meta.get("recipe", ""), "license": config.pretrained_cfg.get("license", ""),
            "status": "available", "aliases": [], "notes": "",
        }
    # A Hub id that served other weights would fail its sha256 check: keep it only for these weights.
    keep_hub = current is not None and current.get("sha256") == sha
    row.update(
        status="available",
        folder=name,
        sha256=sha,
        hf_hub_id=hf_hub_id or (current.get("hf_hub_id") if keep_hub else None),
        metrics=list(meta.get("results", [])),
    )
    # What these weights were trained with replaces what the entry planned.
    data = meta.get("data") if isinstance(meta.get("data"), dict) else {}
    if data.get("num_images"):
        row["num_train_images"] = int(data["num_images"])
    if meta.get("recipe"):
        row["recipe"] = meta["recipe"]
    if meta.get("epochs") is not None:
        row["epochs"] = int(meta["epochs"])
    row["notes"] = _training_note(meta, data)
    return row


def _training_note(meta: dict[str, Any], data: dict[str, Any]) -> str:
    steps = f", {meta['steps']} steps" if meta.get("steps") else ""
    return (f"Trained by equimod-zoo with recipe {meta.get('recipe', '?')} for {meta.get('epochs', '?')} epochs"
            f"{steps} at batch {meta.get('batch_size', '?')} on {data.get('num_images', '?')} images "
            f"({data.get('name', 'unknown data')}); the paper trains for 800 epochs.")


def _copy_folder(folder: Path, target: Path) -> None:
    with staging_dir(target) as stage:
        for path in sorted(folder.iterdir()):
            if path.is_file() and not path.name.startswith("."):
                shutil.copyfile(path, stage / path.name)
        move_into_place(stage, target)
