"""The zoo's GPU campaign: train the next queue item on a remote GPU machine, bring it back, release it here.

The remote GPU machine gives short runs with a time limit and caps on what is sent and returned:
a command of at most 10 minutes, 64 MiB sent with it (the checkout plus the folders it carries), at
most 8 files of 16 MiB (64 MiB, 2 folders deep) returned by each call. This tool fits the work to
them; it is part of the repository, not of the installed package.

    python tools/campaign.py prepare .gpu --untrack-models    # here: the folder that travels
    python3 tools/campaign.py run --out OUT --minutes 9        # the GPU machine: check, train, pack, return
    python3 tools/campaign.py send --out OUT                   # the GPU machine, next call: further parts
    python tools/campaign.py collect OUT1 [OUT2 ...]           # here: rebuild, check, release, mark done
    python tools/campaign.py retrack                           # here: the bundled models back on git's index

The queue is data (tools/campaign_queue.yaml): `run` takes the first item whose status is `todo`.
On CUDA it first checks the real step (a few batches: sync-free, bf16, compile off), then trains
each model with `train --time-budget` (its share of the minutes left; a matched pair's second model
at most the first one's epochs), from `init_from` when the item continues a cycle. Whatever stops
training (the budget, a signal, an error), each model's last exported folder is re-saved in fp16
with its heads, cut into parts (tools/parts.py) and the first call's worth copied into OUT with
the manifest. Rerunning the same `run` on the same machine continues the item's runs.
`--dry-run` does all of it on the CPU with tiny networks and a few dozen images.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent


def _use_checkout() -> None:
    """On the GPU machine the project is a plain checkout, not installed: map training/ and hub/ to the
    package names an install gives them (`equimod_zoo.training`, `equimod_zoo.hub`)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(1, str(ROOT))
    import equimod_zoo

    for name in ("training", "hub"):
        if importlib.util.find_spec(f"equimod_zoo.{name}") is not None:
            continue
        folder = ROOT / name
        spec = importlib.util.spec_from_file_location(f"equimod_zoo.{name}", folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])
        sys.modules[spec.name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[spec.name])
        setattr(equimod_zoo, name, sys.modules[spec.name])


_use_checkout()
sys.path.insert(0, str(TOOLS))


import parts  # noqa: E402
import travel  # noqa: E402
from equimod_zoo.atomic import atomic_write_text  # noqa: E402
from equimod_zoo.constants import CONFIG_FILE, DATA_ENV, HEADS_FILE, WEIGHTS_FILE  # noqa: E402
from equimod_zoo.errors import UserError  # noqa: E402
from equimod_zoo.run_folder import RunFolder  # noqa: E402
from equimod_zoo.yaml_io import dump_yaml, load_yaml, load_yaml_file  # noqa: E402

QUEUE_FILE = TOOLS / "campaign_queue.yaml"
TRAVEL = ROOT / ".gpu"  # where `prepare` puts what travels, and where `run` looks for it
DATA_NAME = "cifar10-jpeg"  # keep the folder's name: the cards key their JPEG caveat on it
BATCH_SIZE = 512
CHECK_SECONDS = 60  # the CUDA check of the real step takes at most this much of the first minute
PACK_SECONDS = 30  # kept back at the end of a GPU run for the fp16 export, the parts and the copy
# --dry-run: the real path at a CPU's scale: 1/8-width networks, 8 px crops, a few dozen images.
DRY_RUN = {"model_args": {"channels": [8, 16, 32, 64], "stem_width": 8}, "data_size": 8, "eval_size": 8,
           "augment.size": 8, "method.proj_hidden": 32, "method.proj_out": 16, "method.eq_hidden": 32,
           "method.eq_out": 16, "method.param_embed": 16, "method.byol_proj_hidden": 32, "method.byol_proj_out": 16,
           "method.byol_pred_hidden": 32, "method.vicreg_proj_hidden": 32, "method.vicreg_proj_out": 16,
           "method.barlow_proj_hidden": 32, "method.barlow_proj_out": 16, "method.mocov3_proj_hidden": 32,
           "method.mocov3_proj_out": 16, "method.mocov3_pred_hidden": 32, "param_stats_samples": 256, "workers": 0,
           "precision": "fp32", "log_every": 1}
DRY_RUN_DATA_LIMIT = 32
DRY_RUN_BATCH_SIZE = 16
DRY_RUN_PACK_SECONDS = 3


@dataclass
class QueueItem:
    """One GPU run's work: the models it trains (a matched pair's first one sets the epochs), from where."""

    id: str
    models: list[str]
    epochs: int | None = None  # None: as many as the minutes fit
    init_from: dict[str, str] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)  # recipe overrides for every model (dotted keys)
    status: str = "todo"
    done: dict[str, Any] = field(default_factory=dict)


def read_queue(path: str | Path = QUEUE_FILE) -> list[QueueItem]:
    data = load_yaml_file(path) or {}
    items = []
    for row in data.get("items", []):
        unknown = set(row) - {f for f in QueueItem.__dataclass_fields__}
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


# ---- run (the GPU machine) ------------------------------------------------------------------
def check_versions() -> dict[str, str]:
    """The versions the step will run with, checked against pyproject's requirements; one line is printed.
    A version below a requirement is refused before any training."""
    import tomllib
    from importlib import metadata

    from packaging.requirements import Requirement

    requirements = [Requirement(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "dependencies"]]
    found = {"python": platform.python_version()}
    wrong = []
    for requirement in requirements:
        try:
            version = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            version = "missing"
        found[requirement.name] = version
        if version == "missing" or not requirement.specifier.contains(version, prereleases=True):
            wrong.append(f"{requirement.name} {version} (needs {requirement.specifier})")
    import torch

    if torch.cuda.is_available():
        found["cuda"] = f"{torch.version.cuda} on {torch.cuda.get_device_name()}"
    print("versions: " + ", ".join(f"{k} {v}" for k, v in found.items()), flush=True)
    if wrong:
        raise UserError(f"this machine's packages do not meet pyproject.toml: {'; '.join(wrong)}; carry the "
                        f"wheels `prepare` downloads")
    return found


class _Stop:
    """SIGTERM or SIGINT outside training: remembered, so that the run still packs and returns what it has."""

    def __init__(self) -> None:
        self.requested: str | None = None

    def __enter__(self) -> _Stop:
        self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = signal.Signals(signum).name

    def __exit__(self, *exc: Any) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


def run(*, out: str | Path | None, minutes: float, data: str | Path, work: str | Path, dry_run: bool = False,
        queue: str | Path = QUEUE_FILE, device: str | None = None) -> dict[str, Any]:
    """Train the queue's next item within `minutes` (from now), pack it, and copy the first call's worth into OUT
    (None: $OUT, else a new WORK/ITEM/returned/call-N)."""
    from equimod_zoo.training.step_check import check_step
    from equimod_zoo.training.trainer import train

    started = time.monotonic()
    deadline = started + minutes * 60 - (DRY_RUN_PACK_SECONDS if dry_run else PACK_SECONDS)
    item = next_item(queue)
    work = Path(work) / f"{item.id}{'-dry-run' if dry_run else ''}-{minutes:g}m"
    out = Path(out) if out is not None else _default_out(work)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"--out {out}: not empty; a run writes only what it brings back into an empty folder")
    manifest: dict[str, Any] = {"item": item.id, "dry_run": dry_run, "minutes": minutes, "models": {},
                                "versions": check_versions(), "errors": []}
    device = "cpu" if dry_run else device
    batch_size = DRY_RUN_BATCH_SIZE if dry_run else BATCH_SIZE
    overrides = {**item.overrides, **(DRY_RUN if dry_run else {})}
    common: dict[str, Any] = dict(data=data, device=device, batch_size=batch_size, progress=False,
                                  cache_dir=work / "cache", data_limit=DRY_RUN_DATA_LIMIT if dry_run else None)
    # A cycle continues the model `prepare` put in TRAVEL/init/NAME (beside the data), else the zoo's;
    # a dry run's tiny networks cannot continue zoo models.
    init_dir = Path(data).parent / "init"
    init_from = {} if dry_run else {
        name: str(init_dir / name) if (init_dir / name).is_dir() else source for name, source in item.init_from.items()}
    runs = {name: work / "runs" / name for name in item.models}
    with _Stop() as stop:
        try:
            import torch

            if not dry_run and torch.cuda.is_available():  # the first minute: does the real step work here?
                check = check_step(item.models[0], data=data, device=device, batch_size=batch_size,
                                   overrides={**item.overrides, "precision": "bf16"}, cache_dir=work / "cache")
                manifest["step_check"] = check.summary()
                print(check.summary(), flush=True)
            epochs = item.epochs
            for index, name in enumerate(item.models):
                if stop.requested:
                    raise UserError(f"stopped by {stop.requested} before {name}")
                share = (deadline - time.monotonic()) / (len(item.models) - index)
                result = train(name, out=runs[name], time_budget=share, epochs=epochs, init_from=init_from.get(name),
                               overrides=overrides, **common)
                manifest["models"][name] = {"epochs": result.epochs_completed, "steps": result.step,
                                            "planned_steps": result.planned_steps, "stopped_by": result.stopped_by,
                                            "init_from": init_from.get(name)}
                print(json.dumps({name: manifest["models"][name]}), flush=True)
                if result.interrupted:
                    break
                epochs = epochs or result.epochs_completed or None  # a matched pair: at most the first's epochs
        except Exception as error:  # whatever went wrong, what was trained still goes back
            manifest["errors"].append(f"{type(error).__name__}: {error}")
            print(f"error: {manifest['errors'][-1]}", file=sys.stderr, flush=True)
        finally:
            manifest.update(_pack(runs, work, dry_run=dry_run))
            manifest["seconds"] = round(time.monotonic() - started, 1)
            atomic_write_text(work / parts.MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
            atomic_write_text(work / parts.SENT_FILE, "[]\n")
            parts.send(work=work, out=out)
    return manifest


def _pack(runs: dict[str, Path], work: Path, *, dry_run: bool) -> dict[str, Any]:
    """Each run's exported model re-saved in fp16 with its heads (the zoo's form), then cut into parts."""
    from equimod_zoo.hub.export import export_model

    exports, facts = work / "export", {}
    shutil.rmtree(exports, ignore_errors=True)
    for name, run_folder in runs.items():
        if not (RunFolder(run_folder).model / CONFIG_FILE).is_file():
            continue  # never reached its first save
        exported = export_model(run_folder, exports / name, repo_id=f"equimod-zoo/{name}", dtype="fp16",
                                with_heads=(RunFolder(run_folder).model / HEADS_FILE).is_file(), zoo_name=name)
        facts[name] = exported.weights_sha256
    packed = parts.pack({name: exports / name for name in facts}, work / "parts")
    return {"weights_sha256": facts, **packed}


# ---- collect (here) -------------------------------------------------------------------------
def collect(outs: list[str | Path], *, work: str | Path, release: bool = True, queue: str | Path = QUEUE_FILE,
            data: str | Path | None = None) -> dict[str, Path]:
    """Rebuild whatever has fully arrived from the OUT folders, check it, release it here, and mark the item done
    once every model is complete. Returns the usable model folders; prints what is still missing."""
    from equimod_zoo import load
    from equimod_zoo.hub.release import release_model
    from equimod_zoo.model_folder import sha256_file

    outs, work = [Path(o) for o in outs], Path(work)
    rebuilt = parts.rebuild(outs, work)
    manifest = json.loads((outs[0] / parts.MANIFEST_FILE).read_text())
    for name, folder in rebuilt.folders.items():
        sha = sha256_file(folder / WEIGHTS_FILE)
        if sha != manifest["weights_sha256"][name]:
            raise UserError(f"{folder / WEIGHTS_FILE}: sha256 {sha} is not the GPU machine's "
                            f"{manifest['weights_sha256'][name]}")
        load(folder)  # loads, with its own recorded sha256 checked
    for name, missing in rebuilt.missing.items():
        usable = "usable without its heads; " if name in rebuilt.folders else ""
        print(f"{name}: {usable}{len(missing)} part(s) still on the GPU machine ({', '.join(missing)}): run "
              f"`python3 tools/campaign.py send --out OUT` there and collect every OUT folder together", flush=True)
    for error in manifest.get("errors", []):
        print(f"the GPU run reported: {error}", flush=True)
    complete = [name for name in rebuilt.complete if name in manifest["models"]]
    if release and not manifest["dry_run"]:  # a dry run's tiny networks are not worth measuring
        for name in complete:
            release_model(rebuilt.folders[name], name, data=data)
    every = set(manifest["models"]) == set(complete) and not manifest.get("errors")
    if every and not manifest["dry_run"]:
        mark_done(queue, manifest["item"], {name: {"epochs": f["epochs"], "steps": f["steps"],
                                                   "weights_sha256": manifest["weights_sha256"][name]}
                                            for name, f in manifest["models"].items()})
    return rebuilt.folders


# ---- prepare (here) -------------------------------------------------------------------------
def prepare(folder: str | Path, *, data: str | Path, queue: str | Path = QUEUE_FILE, wheels: bool = True,
            untrack_models: bool = False, limit: int = travel.TRAVEL_LIMIT,
            root: Path | None = None) -> tuple[int, int]:
    """Build the folder that travels to the GPU machine: the CIFAR-10 train parquet, the wheels the step needs
    there, and the models the next item continues (their weights and heads); ignore it in this checkout.

    Returns (the folder's bytes, all the call sends: the checkout plus the folder). Over `limit`, refuses;
    `untrack_models` first takes the bundled models off the index for the call (`retrack` puts them back).
    `root`: the checkout the call is made from (default: this one), which must hold the folder."""
    from equimod_zoo.weights import locate_weights

    folder = Path(folder)
    root = travel.repo_root(TOOLS) if root is None else Path(root)
    if not folder.resolve().is_relative_to(root):
        raise UserError(f"{folder}: outside the checkout {root}; a GPU call carries only paths inside it")
    (folder / DATA_NAME).mkdir(parents=True, exist_ok=True)
    shutil.copy2(Path(data) / "train.parquet", folder / DATA_NAME / "train.parquet")
    item = next_item(queue)
    for name, source in item.init_from.items():
        model = locate_weights(source).weights.parent
        if not (model / HEADS_FILE).is_file():
            raise UserError(f"item {item.id}: {source} has no {HEADS_FILE}; a cycle continues the heads too")
        (folder / "init" / name).mkdir(parents=True, exist_ok=True)
        for file in (CONFIG_FILE, WEIGHTS_FILE, HEADS_FILE):  # what training reads, nothing more
            shutil.copy2(model / file, folder / "init" / name / file)
    if wheels:
        travel.download_wheels(folder / "wheels")
    travel.ignore_locally(root, folder)
    if untrack_models:
        travel.untrack_bundled_models(root)
    size = travel.folder_bytes(folder)
    total = travel.travelling_bytes(root) + size
    if total > limit:
        hint = ("; add --untrack-models to leave the bundled models (tracked) behind for the call"
                if travel.bundled_models_tracked(root) else "")
        raise UserError(f"a GPU call from {root} carrying {folder} would send {total / 2**20:.1f} MiB, over the "
                        f"{limit / 2**20:.0f} MiB that travels ({size / 2**20:.1f} MiB of it is {folder}){hint}")
    return size, total


# ---- the command line -----------------------------------------------------------------------
def _default_data() -> str:
    """Where `prepare` put the data, else the shared data folder of a development checkout."""
    travelled = TRAVEL / DATA_NAME
    if travelled.is_dir():
        return str(travelled)
    return str(Path(os.environ.get(DATA_ENV) or ROOT.parent / "shared" / "data") / DATA_NAME)


def _default_out(work: Path) -> Path:
    """$OUT when set (the folder a GPU call returns), else the next returned/call-N of the item's WORK."""
    if os.environ.get("OUT"):
        return Path(os.environ["OUT"])
    calls = work / "returned"
    index = 1
    while (calls / f"call-{index}").exists():
        index += 1
    return calls / f"call-{index}"


def _latest_calls(work: Path) -> list[Path]:
    """The OUT folders a local (dry) run left in WORK/ITEM/returned, of the latest item run."""
    runs = sorted(work.glob(f"*/{parts.MANIFEST_FILE}"), key=lambda p: p.stat().st_mtime)
    calls = sorted(runs[-1].parent.glob("returned/call-*")) if runs else []
    if not calls:
        raise UserError(f"no OUT folders given, and no run's in {work}")
    return calls


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python tools/campaign.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    work_help = "where runs and parts live on the GPU machine (not in OUT)"
    p_run = commands.add_parser("run", help="check the step, train the queue's next item, pack it (GPU machine)")
    p_run.add_argument("--out", default=None, help="the folder the call returns (default: $OUT, else a new "
                                                   "WORK/returned/call-N)")
    p_run.add_argument("--minutes", type=float, required=True, help="from the tool's start to its last copy")
    p_run.add_argument("--data", default=None, help=f"the CIFAR-10 folder (default: {TRAVEL.name}/{DATA_NAME}, "
                                                    f"else ${DATA_ENV}/{DATA_NAME})")
    p_run.add_argument("--work", default="/tmp/equimod-campaign", help=work_help)
    p_run.add_argument("--dry-run", action="store_true", help="the whole path on the CPU with tiny networks")
    p_run.add_argument("--queue", default=str(QUEUE_FILE))
    p_send = commands.add_parser("send", help="copy the next parts into OUT (GPU machine, a further call)")
    p_send.add_argument("--out", default=None)
    p_send.add_argument("--work", default="/tmp/equimod-campaign", help=work_help)
    p_collect = commands.add_parser("collect", help="rebuild, check and release what came back (here)")
    p_collect.add_argument("outs", nargs="*", help="the OUT folders of every call (default: WORK/returned/*, "
                                                   "where a dry run leaves them)")
    p_collect.add_argument("--work", default=None, help="where the models are rebuilt (default: campaign-work)")
    p_collect.add_argument("--data", default=None, help=f"the data folder (default: ${DATA_ENV} or ../shared/data)")
    p_collect.add_argument("--no-release", action="store_true", help="rebuild and check only")
    p_collect.add_argument("--queue", default=str(QUEUE_FILE))
    p_prepare = commands.add_parser("prepare", help="build the folder that travels (here)")
    p_prepare.add_argument("travel", nargs="?", default=str(TRAVEL))
    p_prepare.add_argument("--data", default=_default_data())
    p_prepare.add_argument("--queue", default=str(QUEUE_FILE))
    p_prepare.add_argument("--untrack-models", action="store_true",
                           help="take the bundled models off git's index for the call (undo: retrack)")
    commands.add_parser("retrack", help="put the bundled models back on git's index after a call (here)")
    args = parser.parse_args(argv)
    import torch

    from equimod_zoo.runtime import num_threads_to_use

    torch.set_num_threads(num_threads_to_use())  # as the command line does: one thread per idle core
    try:
        if args.command == "run":
            work = Path(args.work)
            manifest = run(out=args.out, minutes=args.minutes, data=args.data or _default_data(), work=work,
                           dry_run=args.dry_run, queue=args.queue)
            print(json.dumps({k: manifest.get(k) for k in ("item", "models", "errors", "seconds")}))
            if manifest["errors"] or not manifest["models"]:
                sys.exit(3)
        elif args.command == "send":
            work = Path(args.work)
            items = sorted(p for p in work.iterdir() if (p / parts.MANIFEST_FILE).is_file()) if work.is_dir() else []
            if not items:
                raise UserError(f"{work}: no packed run to send from; `run` first")
            latest = max(items, key=lambda p: (p / parts.MANIFEST_FILE).stat().st_mtime)
            parts.send(work=latest, out=Path(args.out) if args.out else _default_out(latest))
        elif args.command == "retrack":
            done = travel.retrack_bundled_models(travel.repo_root(TOOLS))
            print("bundled models back on the index" if done else "nothing to retrack")
        elif args.command == "collect":
            if travel.retrack_bundled_models(travel.repo_root(TOOLS)):
                print("bundled models back on the index", file=sys.stderr)
            outs = args.outs or _latest_calls(Path("/tmp/equimod-campaign"))
            folders = collect(outs, work=args.work or ROOT / "campaign-work", release=not args.no_release,
                              queue=args.queue, data=args.data)
            print(json.dumps({name: str(folder) for name, folder in folders.items()}))
        else:
            size, total = prepare(args.travel, data=args.data, queue=args.queue, untrack_models=args.untrack_models)
            print(f"{args.travel}: {size / 2**20:.1f} MiB; the call sends {total / 2**20:.1f} MiB in all")
            if args.untrack_models:
                print("the bundled models are off git's index until `campaign.py retrack` (collect runs it): "
                      "commit nothing before that")
    except (ValueError, FileNotFoundError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
