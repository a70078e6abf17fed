"""What comes back from the remote GPU machine: model folders cut into parts that fit what one call returns.

A call returns at most 8 files of 16 MiB, 64 MiB in all, no more than 2 folders deep. Each model
folder is packed as two groups, each a tar cut into parts of at most PART_BYTES: its `backbone`
(config.json, model.safetensors, the card, recipe.yaml, log.csv: the model is usable from it
alone) and its `heads` (equimod_heads.safetensors, which a training cycle needs). Every model's
backbone comes before any heads, so a ResNet-50 with its heads (about 88 MB in fp16) returns its
backbone in the first call and its heads in the next. The manifest (sha256 of every part and
group) travels in every call; `send` fills a call with the next parts; `rebuild` joins whatever
has fully arrived and says what is missing.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from equimod_zoo.atomic import atomic_write_text
from equimod_zoo.constants import HEADS_FILE
from equimod_zoo.errors import UserError
from equimod_zoo.model_folder import sha256_file

MANIFEST_FILE = "manifest.json"
SENT_FILE = "sent.json"
PART_BYTES = 15 * 2**20
OUT_MAX_FILES = 8
OUT_MAX_BYTES = 64 * 2**20
GROUPS = ("backbone", "heads")


def _group_of(name: str) -> str:
    return "heads" if name == HEADS_FILE else "backbone"


def pack(folders: dict[str, Path], parts_dir: Path) -> dict[str, Any]:
    """Cut each model folder into its groups' parts in `parts_dir`; the manifest's `parts` and `groups`.

    Parts are listed in the order they should travel: every backbone first, then every heads file."""
    shutil.rmtree(parts_dir, ignore_errors=True)
    parts_dir.mkdir(parents=True)
    parts, groups = [], {}
    for group in GROUPS:
        for model, folder in folders.items():
            files = sorted(p.name for p in folder.iterdir() if p.is_file() and _group_of(p.name) == group)
            if not files:
                continue
            archive = parts_dir / f"{model}.{group}.tar"
            with tarfile.open(archive, "w") as tar:
                for name in files:
                    tar.add(folder / name, arcname=name)
            names = []
            with open(archive, "rb") as handle:
                for index, chunk in enumerate(iter(lambda: handle.read(PART_BYTES), b"")):
                    name = f"{model}.{group}.{index:03d}"
                    (parts_dir / name).write_bytes(chunk)
                    parts.append({"name": name, "bytes": len(chunk), "sha256": hashlib.sha256(chunk).hexdigest(),
                                  "model": model, "group": group})
                    names.append(name)
            groups.setdefault(model, {})[group] = {"files": files, "parts": names,
                                                   "sha256": sha256_file(archive)}
            archive.unlink()
    return {"parts": parts, "groups": groups}


def schedule(sizes: list[int], *, first_bytes: int, max_files: int, max_bytes: int) -> list[list[int]]:
    """Which parts (by index, in order) each call returns: the manifest (`first_bytes`) and the next parts
    while they fit, in order."""
    calls, index = [], 0
    while index < len(sizes):
        room, budget, call = max_files - 1, max_bytes - first_bytes, []
        while index < len(sizes) and room > 0 and sizes[index] <= budget:
            call.append(index)
            room, budget, index = room - 1, budget - sizes[index], index + 1
        if not call:
            raise AssertionError(f"part {index} ({sizes[index]} bytes) fits no call")
        calls.append(call)
    return calls


def send(*, work: Path, out: Path) -> dict[str, Any]:
    """Copy the manifest and the next parts not yet sent into OUT, within what one call returns."""
    manifest = json.loads((work / MANIFEST_FILE).read_text())
    sent_path = work / SENT_FILE
    sent = json.loads(sent_path.read_text()) if sent_path.is_file() else []
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(work / MANIFEST_FILE, out / MANIFEST_FILE)
    left = [p for p in manifest["parts"] if p["name"] not in sent]
    plan = schedule([p["bytes"] for p in left], first_bytes=(out / MANIFEST_FILE).stat().st_size,
                    max_files=OUT_MAX_FILES, max_bytes=OUT_MAX_BYTES)
    copied = [left[i]["name"] for i in plan[0]] if plan else []
    for name in copied:
        shutil.copy2(work / "parts" / name, out / name)
    atomic_write_text(sent_path, json.dumps(sent + copied) + "\n")
    report = {"sent": copied, "parts_left": len(left) - len(copied)}
    print(json.dumps(report))
    return report


@dataclass(frozen=True)
class Rebuilt:
    """What `rebuild` made of the OUT folders: each model's folder (from its backbone on) and what is missing."""

    folders: dict[str, Path]
    complete: list[str]  # models whose every group arrived
    missing: dict[str, list[str]]  # model -> the parts still on the GPU machine


def rebuild(outs: list[Path], work: Path) -> Rebuilt:
    """Join the parts that have fully arrived into model folders under WORK/models; check every sha256."""
    manifests = [json.loads((o / MANIFEST_FILE).read_text()) for o in outs]
    manifest = manifests[0]
    if any(m["parts"] != manifest["parts"] or m["item"] != manifest["item"] for m in manifests):
        raise UserError("the OUT folders hold parts of different GPU runs (their manifests differ)")
    found: dict[str, Path] = {}
    for part in manifest["parts"]:
        path = next((o / part["name"] for o in outs if (o / part["name"]).is_file()), None)
        if path is not None:
            if sha256_file(path) != part["sha256"]:
                raise UserError(f"{path}: sha256 differs from the GPU machine's manifest (a damaged copy)")
            found[part["name"]] = path
    work.mkdir(parents=True, exist_ok=True)
    folders, complete, missing = {}, [], {}
    for model, groups in manifest["groups"].items():
        folder = work / "models" / model
        absent = [name for group in groups.values() for name in group["parts"] if name not in found]
        for group, facts in groups.items():
            if any(name not in found for name in facts["parts"]):
                continue
            archive = work / f"{model}.{group}.tar"
            with open(archive, "wb") as joined:
                for name in facts["parts"]:
                    joined.write(found[name].read_bytes())
            if sha256_file(archive) != facts["sha256"]:
                raise UserError(f"{model}: its {group} parts join into another file than the GPU machine packed")
            folder.mkdir(parents=True, exist_ok=True)
            with tarfile.open(archive) as tar:
                if sorted(tar.getnames()) != sorted(facts["files"]):
                    raise UserError(f"{model}: its {group} holds {tar.getnames()}, the manifest says {facts['files']}")
                tar.extractall(folder, filter="data")
            archive.unlink()
        if "backbone" in groups and all(n in found for n in groups["backbone"]["parts"]):
            folders[model] = folder
        if absent:
            missing[model] = absent
        elif model in folders:
            complete.append(model)
    return Rebuilt(folders=folders, complete=complete, missing=missing)
