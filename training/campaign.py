"""The zoo's GPU campaign, one command a GPU run: train the next queue item, bring it back, evaluate it here.

    python -m equimod_zoo.training.campaign prepare TRAVEL --untrack-models   # here: the folder that travels
    python3 training/campaign.py run --out OUT --minutes 9 --data TRAVEL/cifar10-jpeg   # the GPU machine
    python3 training/campaign.py send --out OUT                     # further parts, same machine, next call
    python -m equimod_zoo.training.campaign collect OUT [OUT2 ...] --work DIR       # here: rebuild, check, evaluate
    python -m equimod_zoo.training.campaign retrack                 # here: the bundled models back on the index

On the GPU machine the project is a plain checkout, not installed: run as a file, this module
maps training/ and hub/ to `equimod_zoo.training` / `equimod_zoo.hub` itself (no links to make).

The queue is data (training/campaign_queue.yaml): `run` takes the first item whose status is
`todo`, fits its epochs to `--minutes` with a short timed calibration of each model (unless the
item fixes them; a matched pair shares one count), trains each model (from `init_from` when the
item continues a cycle), exports each as an fp16 model folder with its heads, and packs them into
one tar split into 15 MiB parts with a manifest of sha256s. A GPU run brings back at most 8 files
of 16 MiB, 64 MiB in all: OUT gets the manifest and the first parts that fit; `send` copies the
next ones in a further call while the machine is warm (a ResNet-50 with its heads is ~90 MB).
`run` keeps to its minutes: past them a watchdog stops training with SIGTERM (the trainer
checkpoints) and the manifest says so. `collect` joins the parts, checks every sha256 against the
manifest, unpacks the model folders, runs the CPU evaluation the cards need (hub/release_cifar10.sh:
linear, kNN, Flowers-102 at 64 px, probe-augs), and marks the item done in the queue.
`--dry-run` does all of it on the CPU with tiny models, a few steps and a data limit.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


if __name__ == "__main__" and not __package__:
    # Run as a file from a source checkout (`python3 training/campaign.py`, the GPU machine, where the
    # project is not installed): map training/ and hub/ to the package names the install gives them.
    import importlib.util

    _root = Path(__file__).resolve().parents[1]
    sys.path[0] = str(_root)
    import equimod_zoo

    for _name, _folder in (("training", _root / "training"), ("hub", _root / "hub")):
        _spec = importlib.util.spec_from_file_location(f"equimod_zoo.{_name}", _folder / "__init__.py",
                                                       submodule_search_locations=[str(_folder)])
        sys.modules[_spec.name] = importlib.util.module_from_spec(_spec)
        _spec.loader.exec_module(sys.modules[_spec.name])
        setattr(equimod_zoo, _name, sys.modules[_spec.name])

from equimod_zoo.atomic import atomic_write_text
from equimod_zoo.constants import CHECKPOINT_FILE, DATA_ENV, LOG_FILE, WEIGHTS_FILE
from equimod_zoo.errors import UserError
from equimod_zoo.model_folder import sha256_file
from equimod_zoo.training.run_log import read_log
from equimod_zoo.training.travel import (TRAVEL_LIMIT, bundled_models_tracked, folder_bytes, ignore_locally,
                                         repo_root, retrack_bundled_models, travelling_bytes,
                                         untrack_bundled_models)
from equimod_zoo.yaml_io import dump_yaml, load_yaml, load_yaml_file

QUEUE_FILE = Path(__file__).parent / "campaign_queue.yaml"
MANIFEST_FILE = "manifest.json"
ARCHIVE = "models.tar"
PART_BYTES = 15 * 2**20
OUT_MAX_FILES = 8
OUT_MAX_BYTES = 64 * 2**20
CALIBRATION_STEPS = 30  # timed steps per model; the first logged interval (warm-up, compile) is dropped
CALIBRATION_LOG_EVERY = 10
EXPORT_RESERVE_S = 60  # export, pack and copy after training (GPU run)
BATCH_SIZE = 512
# Python 3.12 wheels the GPU machine's environment lacks (/work/.library/device/KINDS.md).
TRAVEL_WHEELS = ("datasets", "dill", "multiprocess")
# --dry-run: the real path at a CPU's scale: 1/8-width networks, 8 px crops, a few dozen images.
DRY_RUN = {"model_args": {"channels": [8, 16, 32, 64], "stem_width": 8}, "data_size": 8, "eval_size": 8,
           "augment.size": 8, "method.proj_hidden": 32, "method.proj_out": 16, "method.eq_hidden": 32,
           "method.eq_out": 16, "method.param_embed": 16, "method.byol_proj_hidden": 32, "method.byol_proj_out": 16,
           "method.byol_pred_hidden": 32, "method.vicreg_proj_hidden": 32, "method.vicreg_proj_out": 16,
           "method.barlow_proj_hidden": 32, "method.barlow_proj_out": 16, "method.mocov3_proj_hidden": 32,
           "method.mocov3_proj_out": 16, "method.mocov3_pred_hidden": 32, "param_stats_samples": 256, "workers": 0,
           "optim.warmup_epochs": 0,
           "precision": "fp32"}
DRY_RUN_DATA_LIMIT = 32
DRY_RUN_BATCH_SIZE = 16


@dataclass
class QueueItem:
    """One GPU run's work: the models it trains (a matched pair shares its epochs), from where."""

    id: str
    models: list[str]
    epochs: int | None = None
    init_from: dict[str, str] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)  # recipe overrides for every model (dotted keys)
    status: str = "todo"
    done: dict[str, Any] = field(default_factory=dict)


def read_queue(path: str | Path = QUEUE_FILE) -> list[QueueItem]:
    data = load_yaml_file(path) or {}
    items = []
    for row in data.get("items", []):
        unknown = set(row) - {"id", "models", "epochs", "init_from", "overrides", "status", "done"}
        if unknown:
            raise UserError(f"{path}: item {row.get('id')!r} has unknown key {sorted(unknown)[0]!r}")
        items.append(QueueItem(**row))
    return items


def next_item(path: str | Path = QUEUE_FILE) -> QueueItem:
    item = next((i for i in read_queue(path) if i.status == "todo"), None)
    if item is None:
        raise UserError(f"{path}: no item left to train (every status is done)")
    return item


def mark_done(path: str | Path, item_id: str, done: dict[str, Any]) -> None:
    """Set an item's status to done and record what was trained, keeping the file's comments above `items`."""
    path = Path(path)
    text = path.read_text()
    header = text[:text.index("items:")] if "items:" in text else ""
    data = load_yaml(text, where=str(path))
    for row in data["items"]:
        if row["id"] == item_id:
            row["status"], row["done"] = "done", done
            break
    else:
        raise UserError(f"{path}: no item {item_id!r}")
    atomic_write_text(path, header + dump_yaml(data, sort_keys=False, width=120))


# ---- run (on the GPU machine) ---------------------------------------------------------------
def seconds_per_epoch(run_folder: Path, *, batch_size: int) -> float:
    """One epoch's wall time, from the median throughput of a run's log after its first interval."""
    rows = read_log(run_folder)
    if not rows:
        raise UserError(f"{run_folder / LOG_FILE}: no logged steps to time")
    timed = rows[1:] or rows
    steps_per_epoch = rows[-1]["step"] / rows[-1]["epoch"]
    return steps_per_epoch * batch_size / statistics.median(row["images_per_s"] for row in timed)


class _Watchdog:
    """SIGTERM to this process at the deadline: the trainer checkpoints and returns interrupted."""

    def __init__(self, deadline: float) -> None:
        self.fired = False
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        self.fired = True
        os.kill(os.getpid(), signal.SIGTERM)

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._timer.cancel()


def run(*, out: str | Path, minutes: float, data: str | Path, work: str | Path, dry_run: bool = False,
        queue: str | Path = QUEUE_FILE, device: str | None = None) -> dict[str, Any]:
    """Train the queue's next item within `minutes`, export and pack it; OUT gets what fits (see `send`)."""
    from equimod_zoo.hub.export import export_model
    from equimod_zoo.training.trainer import train

    started = time.monotonic()
    deadline = started + minutes * 60
    out, work = Path(out), Path(work)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"--out {out}: not empty; a run writes only what it brings back into an empty folder")
    item = next_item(queue)
    common: dict[str, Any] = dict(data=data, device="cpu" if dry_run else device, progress=False)
    batch_size = DRY_RUN_BATCH_SIZE if dry_run else BATCH_SIZE
    if dry_run:
        common.update(data_limit=DRY_RUN_DATA_LIMIT)
    overrides = {**item.overrides, **(DRY_RUN if dry_run else {})}
    # A cycle continues the model `prepare` put in TRAVEL/init/NAME (beside --data), else the zoo's.
    init_dir = Path(data).parent / "init"
    init_from = {} if dry_run else {  # a dry run's tiny networks cannot continue zoo models
        name: str(init_dir / name) if (init_dir / name).is_dir() else source for name, source in item.init_from.items()}
    calibration_steps, calibration_log_every = (4, 2) if dry_run else (CALIBRATION_STEPS, CALIBRATION_LOG_EVERY)

    epochs = item.epochs
    timings: dict[str, float] = {}
    if epochs is None:
        for name in item.models:
            folder = work / "calibration" / name
            shutil.rmtree(folder, ignore_errors=True)
            train(name, out=folder, epochs=1000, batch_size=batch_size, max_steps=calibration_steps,
                  init_from=init_from.get(name),
                  overrides={**overrides, "log_every": calibration_log_every, "checkpoint_every": 1000}, **common)
            timings[name] = seconds_per_epoch(folder, batch_size=batch_size)
        shutil.rmtree(work / "calibration", ignore_errors=True)
        reserve = 0 if dry_run else EXPORT_RESERVE_S
        left = deadline - time.monotonic() - reserve
        epochs = 1 if dry_run else math.floor(left / sum(timings.values()))
        if epochs < 1:
            raise UserError(f"{minutes} minutes leave {left:.0f} s for training; one epoch of each model takes "
                            f"{sum(timings.values()):.0f} s: give more --minutes")

    manifest: dict[str, Any] = {"item": item.id, "epochs": epochs, "minutes": minutes, "dry_run": dry_run,
                                "overrides": item.overrides,
                                "calibrated_seconds_per_epoch": timings, "models": {}, "interrupted": False}
    exports = work / "export"
    with _Watchdog(deadline - (0 if dry_run else EXPORT_RESERVE_S)) as watchdog:
        for name in item.models:
            folder = work / "runs" / name
            result = train(name, out=folder, epochs=epochs, batch_size=batch_size, init_from=init_from.get(name),
                           resume=(folder / CHECKPOINT_FILE).is_file(), overrides=overrides, **common)
            if result.interrupted or watchdog.fired:
                manifest["interrupted"] = True
                break
            exported = export_model(folder, exports / name, repo_id=f"equimod-zoo/{name}", dtype="fp16",
                                    with_heads=True, zoo_name=name, overwrite=True)
            shutil.copy2(folder / LOG_FILE, exports / name / LOG_FILE)
            manifest["models"][name] = {"weights_sha256": exported.weights_sha256, "epochs": result.epochs_completed,
                                        "steps": result.step, "init_from": init_from.get(name)}
    manifest["parts"] = _pack(exports, work / "parts")
    manifest["seconds"] = round(time.monotonic() - started, 1)
    atomic_write_text(work / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
    atomic_write_text(work / "sent.json", "[]\n")
    send(work=work, out=out)
    return manifest


def _pack(exports: Path, parts_dir: Path) -> list[dict[str, Any]]:
    """Tar the exported model folders and split the tar into PART_BYTES parts; their names and sha256s."""
    shutil.rmtree(parts_dir, ignore_errors=True)
    parts_dir.mkdir(parents=True)
    archive = parts_dir.parent / ARCHIVE
    with tarfile.open(archive, "w") as tar:
        for folder in sorted(exports.iterdir()) if exports.is_dir() else []:
            tar.add(folder, arcname=folder.name)
    parts = []
    with open(archive, "rb") as handle:
        for index in range(10_000):
            chunk = handle.read(PART_BYTES)
            if not chunk:
                break
            name = f"{ARCHIVE}.{index:03d}"
            (parts_dir / name).write_bytes(chunk)
            parts.append({"name": name, "bytes": len(chunk), "sha256": hashlib.sha256(chunk).hexdigest()})
    archive.unlink()
    return parts


def send(*, work: str | Path, out: str | Path) -> list[str]:
    """Copy the manifest and the next parts not yet sent into OUT, within what a GPU run brings back."""
    work, out = Path(work), Path(out)
    manifest = json.loads((work / MANIFEST_FILE).read_text())
    sent = json.loads((work / "sent.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(work / MANIFEST_FILE, out / MANIFEST_FILE)
    room, budget, copied = OUT_MAX_FILES - 1, OUT_MAX_BYTES - (out / MANIFEST_FILE).stat().st_size, []
    for part in manifest["parts"]:
        if part["name"] in sent:
            continue
        if room == 0 or part["bytes"] > budget:
            break
        shutil.copy2(work / "parts" / part["name"], out / part["name"])
        room, budget = room - 1, budget - part["bytes"]
        copied.append(part["name"])
    atomic_write_text(work / "sent.json", json.dumps(sent + copied) + "\n")
    left = len(manifest["parts"]) - len(sent) - len(copied)
    print(json.dumps({"sent": copied, "parts_left": left}))
    return copied


# ---- collect (here) -------------------------------------------------------------------------
def collect(outs: list[str | Path], *, work: str | Path, evaluate: bool = True, queue: str | Path = QUEUE_FILE,
            data: str | Path | None = None) -> dict[str, Path]:
    """Rebuild the model folders from one or more OUT folders, check them, evaluate them, mark the item done."""
    from equimod_zoo import load

    outs, work = [Path(o) for o in outs], Path(work)
    manifests = [json.loads((o / MANIFEST_FILE).read_text()) for o in outs]
    manifest = manifests[0]
    if any(m["parts"] != manifest["parts"] or m["item"] != manifest["item"] for m in manifests):
        raise UserError("the OUT folders hold parts of different GPU runs (their manifests differ)")
    if manifest["interrupted"]:
        raise UserError(f"{outs[0] / MANIFEST_FILE}: the run was stopped at its time limit before every model was "
                        f"trained; rerun item {manifest['item']} with more --minutes")
    work.mkdir(parents=True, exist_ok=True)
    archive = work / ARCHIVE
    with open(archive, "wb") as joined:
        for part in manifest["parts"]:
            found = next((o / part["name"] for o in outs if (o / part["name"]).is_file()), None)
            if found is None:
                raise FileNotFoundError(f"part {part['name']} is in none of {', '.join(map(str, outs))}: bring it "
                                        f"back with `campaign send` on the GPU machine")
            chunk = found.read_bytes()
            if hashlib.sha256(chunk).hexdigest() != part["sha256"]:
                raise UserError(f"{found}: sha256 differs from the GPU machine's manifest (a damaged copy)")
            joined.write(chunk)
    models = work / "models"
    with tarfile.open(archive) as tar:
        tar.extractall(models, filter="data")
    archive.unlink()
    folders = {}
    for name, facts in manifest["models"].items():
        folder = models / name
        sha = sha256_file(folder / WEIGHTS_FILE)
        if sha != facts["weights_sha256"]:
            raise UserError(f"{folder / WEIGHTS_FILE}: sha256 {sha} is not the GPU machine's {facts['weights_sha256']}")
        load(folder)  # loads, with its own recorded sha256 checked
        folders[name] = folder
    if evaluate:
        for name, folder in folders.items():
            _evaluate(folder, name, work / "release" / name, data=data)
    if not manifest["dry_run"]:
        mark_done(queue, manifest["item"], {name: {"epochs": f["epochs"], "weights_sha256": f["weights_sha256"]}
                                            for name, f in manifest["models"].items()})
    return folders


def _evaluate(folder: Path, name: str, release: Path, *, data: str | Path | None) -> None:
    """hub/release_cifar10.sh on the fp16 folder: linear, kNN, Flowers-102 at 64 px, probe-augs; bundles it."""
    script = Path(__file__).resolve().parents[1] / "hub" / "release_cifar10.sh"
    release.mkdir(parents=True, exist_ok=True)
    if not (release / name).exists():
        shutil.copytree(folder, release / name)  # the script measures the folder at WORK/NAME as it is
    env = {**os.environ, "HEADS": "--with-heads", **({DATA_ENV: str(data)} if data else {})}
    subprocess.run(["bash", str(script), str(folder), name, str(release)], check=True, env=env,
                   cwd=script.parents[1])


# ---- prepare (here) -------------------------------------------------------------------------
def prepare(travel: str | Path, *, data: str | Path, queue: str | Path = QUEUE_FILE, wheels: bool = True,
            untrack_models: bool = False, limit: int = TRAVEL_LIMIT, root: Path | None = None) -> tuple[int, int]:
    """Build the folder that travels to the GPU machine: the CIFAR-10 train parquet, missing wheels, and
    the models the next item continues; ignore it in this checkout (it is carried, not committed).

    Returns (the folder's bytes, all the call sends: the checkout as the device counts it plus the
    folder). Over `limit`, refuses; `untrack_models` first takes the bundled models off the index
    for the call (`training.travel`; `retrack` puts them back). `root`: the checkout the call is made
    from (default: this code's own), which must hold TRAVEL, since a call carries only its paths."""
    travel = Path(travel)
    root = repo_root(Path(__file__).parent) if root is None else Path(root)
    if not travel.resolve().is_relative_to(root):
        raise UserError(f"{travel}: outside the checkout {root}; a GPU call carries only paths inside it")
    (travel / "cifar10-jpeg").mkdir(parents=True, exist_ok=True)  # the name cards key their JPEG caveat on
    shutil.copy2(Path(data) / "train.parquet", travel / "cifar10-jpeg" / "train.parquet")
    item = next_item(queue)
    for name, source in item.init_from.items():
        from equimod_zoo.weights import locate_weights

        folder = locate_weights(source).weights.parent
        shutil.copytree(folder, travel / "init" / name, dirs_exist_ok=True)
    if wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.12", "--implementation", "cp",
                        *(f"--platform={p}" for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64",
                                                      "manylinux2014_x86_64", "any")),
                        "-d", str(travel / "wheels"), *TRAVEL_WHEELS], check=True)
    ignore_locally(root, travel)
    if untrack_models:
        untrack_bundled_models(root)
    size = folder_bytes(travel)
    total = travelling_bytes(root) + size
    if total > limit:
        hint = ("; add --untrack-models to leave the bundled models (tracked) behind for the call"
                if bundled_models_tracked(root) else "")
        raise UserError(f"a GPU call from {root} carrying {travel} would send {total / 2**20:.1f} MiB, over the "
                        f"{limit / 2**20:.0f} MiB that travels ({size / 2**20:.1f} MiB of it is {travel}){hint}")
    return size, total


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m equimod_zoo.training.campaign", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p_run = commands.add_parser("run", help="train the queue's next item (GPU machine)")
    p_run.add_argument("--out", required=True)
    p_run.add_argument("--minutes", type=float, required=True)
    p_run.add_argument("--data", default="cifar10-jpeg")
    p_run.add_argument("--work", default="/tmp/equimod-campaign", help="where runs and parts live (not in OUT)")
    p_run.add_argument("--dry-run", action="store_true")
    p_run.add_argument("--queue", default=str(QUEUE_FILE))
    p_send = commands.add_parser("send", help="copy the next parts into OUT (GPU machine, a further call)")
    p_send.add_argument("--work", default="/tmp/equimod-campaign")
    p_send.add_argument("--out", required=True)
    p_collect = commands.add_parser("collect", help="rebuild, check and evaluate what came back (here)")
    p_collect.add_argument("outs", nargs="+")
    p_collect.add_argument("--work", required=True)
    p_collect.add_argument("--data", default=None, help="the shared data folder (default: the release script's)")
    p_collect.add_argument("--no-eval", action="store_true", help="rebuild and check only")
    p_collect.add_argument("--queue", default=str(QUEUE_FILE))
    p_prepare = commands.add_parser("prepare", help="build the folder that travels (here)")
    p_prepare.add_argument("travel")
    p_prepare.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" /
                                                 "cifar10-jpeg"))
    p_prepare.add_argument("--queue", default=str(QUEUE_FILE))
    p_prepare.add_argument("--untrack-models", action="store_true",
                           help="take the bundled models off git's index for the call (undo: retrack)")
    commands.add_parser("retrack", help="put the bundled models back on git's index after a call (here)")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            manifest = run(out=args.out, minutes=args.minutes, data=args.data, work=args.work, dry_run=args.dry_run,
                           queue=args.queue)
            print(json.dumps({k: manifest[k] for k in ("item", "epochs", "interrupted", "seconds")}))
            if manifest["interrupted"]:
                sys.exit(3)
        elif args.command == "send":
            send(work=args.work, out=args.out)
        elif args.command == "retrack":
            done = retrack_bundled_models(repo_root(Path(__file__).parent))
            print("bundled models back on the index" if done else "nothing to retrack")
        elif args.command == "collect":
            if retrack_bundled_models(repo_root(Path(__file__).parent)):
                print("bundled models back on the index", file=sys.stderr)
            folders = collect(args.outs, work=args.work, evaluate=not args.no_eval, queue=args.queue, data=args.data)
            print(json.dumps({name: str(folder) for name, folder in folders.items()}))
        else:
            size, total = prepare(args.travel, data=args.data, queue=args.queue, untrack_models=args.untrack_models)
            print(f"{args.travel}: {size / 2**20:.1f} MiB; the call sends {total / 2**20:.1f} MiB in all")
            if args.untrack_models:
                print("the bundled models are off git's index until `campaign retrack` (collect runs it): "
                      "commit nothing before that")
    except (ValueError, FileNotFoundError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
