"""The training loop: SimCLR, BYOL and EquiMod pre-training, on a CPU, one GPU, or many with torchrun.

One step: a uint8 batch (already on the device) becomes x0 (the un-augmented view, EquiMod only)
and two augmented views (x1, p1), (x2, p2) with `BatchedAugment`; the method returns its loss
under autocast (bf16 on CPUs with native bf16 and on GPUs that have it, else fp16 with a GradScaler); LARS steps
with the learning rate of this step; BYOL's target follows with this step's momentum.

The step never waits for the device: the learning rate and momentum of every step are computed
once into device tensors and indexed by a device step counter, the losses stay on the device,
and the host reads them (and checks them for NaN) only at logging and checkpoint steps. So the
whole step can go through torch.compile (recipe `compile: step`, with `compile_mode`
reduce-overhead for CUDA graphs) as well as the method alone (`compile: model`).

A run may start from a trained model instead of random weights (`init_from`): a new cycle with
its own warm-up and cosine, fresh optimiser state, BYOL's target copied from the online network
(training/cycles.py); the exported model then lists every cycle it went through.

A run lives in one folder RUN (equimod_zoo/run_folder.py): run.json, recipe.yaml, log.csv, tb/,
checkpoint.pt and the exported model folder RUN/model. Every save exports the model folder (staged
and renamed into place) and then writes the checkpoint (atomic): every `checkpoint_every` epochs,
at `max_steps`, at the end, and when SIGTERM or SIGINT arrives (at the next step boundary; the
handler covers set-up and saving too). So whatever stops a run after its first save, even a kill
or a crash, RUN/model is a complete model folder at least as new as the checkpoint, and
`resume=True` continues exactly where the checkpoint left off. A non-finite loss stops the run
with an error naming the step and leaves the last good checkpoint untouched.

`time_budget` (training/budget.py) fits the run's length to a time limit and keeps the fitted plan
in run.json, so rerunning the same command continues the run rather than starting another.
"""
from __future__ import annotations

import contextlib
import copy
import signal
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from equimod_zoo.atomic import atomic_write_text, staging_dir
from equimod_zoo.constants import CHECKPOINT_FILE
from equimod_zoo.dataclass_dict import plain
from equimod_zoo.devices import cpu_has_fast_bf16
from equimod_zoo.equimod.augment import BatchedAugment, parameter_statistics
from equimod_zoo.errors import NonFiniteLossError, UserError
from equimod_zoo.model_folder import ModelConfig
from equimod_zoo.output_folder import check_output_folder
from equimod_zoo.run_folder import RUN_LAYOUT, RunFolder
from equimod_zoo.training.budget import (CALIBRATION_SECONDS, CALIBRATION_SHARE, CALIBRATION_STEPS, Costs, Plan,
                                         final_reserve, fit_plan, parse_duration)
from equimod_zoo.training.checkpoint import (
    TrainingState,
    load_checkpoint,
    remove_debris,
    restore_rng,
    rng_state,
    save_checkpoint,
    training_state,
)
from equimod_zoo.training.cycles import SourceModel, initialise_from, load_source
from equimod_zoo.training.data import BatchLoader, EpochSampler, load_train_data
from equimod_zoo.training.distributed import (
    DistInfo,
    cleanup_distributed,
    convert_sync_batchnorm,
    hardware_name,
    reduce_mean,
    seed_everything,
    setup_distributed,
)
from equimod_zoo.training.export import Budget, build_backbone, compute_record, export_run, write_model
from equimod_zoo.training.methods import SSLMethod, build_method, byol_momentum, momentum_schedule
from equimod_zoo.training.optim import build_optimizer, lr_at, lr_schedule, set_lr
from equimod_zoo.training.recipe import EXECUTION_FIELDS, Recipe, load_recipe, recipe_from_dict
from equimod_zoo.training.run_log import RunLog


@dataclass(frozen=True)
class TrainResult:
    """How a call to `train` ended."""

    out: Path
    step: int  # optimiser steps completed, in total
    epochs_completed: int
    last_loss: float | None
    finished: bool  # every step of the recipe (or of the time budget's plan) is done
    interrupted: bool  # stopped by SIGTERM or SIGINT, with a checkpoint to resume from
    exported: bool  # RUN/model holds the model at `step`
    stopped_by: str | None = None  # "SIGTERM", "SIGINT", "time budget", "max steps"; None when finished
    planned_steps: int | None = None  # the steps the time budget's plan fitted (None without a budget)
    steps_per_epoch: int | None = None
    cycles: int = 1  # the model's training cycles, this one included (`init_from` continues a model)
    model_epochs: int | None = None  # the model's epochs and steps over every cycle
    model_steps: int | None = None


def train(
    recipe: str | Path | Recipe | None,
    *,
    data: str | Path,
    out: str | Path,
    epochs: int | None = None,
    batch_size: int | None = None,
    max_steps: int | None = None,
    seed: int | None = None,
    resume: bool = False,
    init_from: str | Path | None = None,
    time_budget: float | str | None = None,
    started: float | None = None,
    device: str | torch.device | None = None,
    compile: bool | str | None = None,
    workers: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    cache_dir: str | Path | None = None,
    data_limit: int | None = None,
    progress: bool = True,
    tensorboard: bool | None = None,
) -> TrainResult:
    """Pre-train a backbone with `recipe` on `data`, into the run folder `out`.

    Args:
        recipe: a recipe name (training/recipes/NAME.yaml), a YAML file or a `Recipe`; with
            `resume`, None means the run's own recipe.
        data: a parquet file or folder (e.g. $EQUIMOD_DATA/cifar10-jpeg), an image folder, or a
            Hugging Face dataset id.
        out: the run folder: new, empty, or an earlier run (equimod_zoo/run_folder.py); anything
            else is refused before any work.
        epochs, batch_size, seed, compile, workers: override the recipe's values (compile: "off",
            "model" or "step"; True means "model"). With `time_budget`, `epochs` is the most it fits.
        max_steps: stop after this many optimiser steps in total (a resumable checkpoint and an
            export are still written).
        resume: continue from out/checkpoint.pt. Execution settings (workers, compile, log and
            checkpoint intervals) may change; anything that changes the computation may not.
        init_from: a zoo name, model folder (with its heads) or run of the recipe's method and
            architecture: start a new cycle from its weights instead of random ones.
        time_budget: seconds, or a duration such as "9m" or "20h": fit the run's length so that
            training, the last checkpoint and the export end inside it (training/budget.py). An
            earlier run in `out` with a plan is continued, under this call's budget.
        started: when the budget started (a `time.monotonic()` value; default: now).
        device: "cpu", "cuda", "cuda:1"...; default: this process's GPU if there is one.
        overrides: further recipe overrides, dotted keys allowed (`{"optim.lr": 1.0}`).
        cache_dir: where decoded datasets are cached (default: $EQUIMOD_ZOO_CACHE or ~/.cache/equimod_zoo).
        data_limit: train on the first `data_limit` images only (quick checks).
        progress: show a progress bar.
        tensorboard: also write TensorBoard events to out/tb (None: when tensorboard is installed);
            the metrics always go to out/log.csv.
    """
    started = time.monotonic() if started is None else started
    budget = parse_duration(time_budget) if isinstance(time_budget, str) else time_budget
    if budget is not None and not budget > 0:
        raise UserError(f"--time-budget must be positive, got {budget}")
    owns_process_group = not (dist.is_available() and dist.is_initialized())
    info = setup_distributed(device=device)
    try:
        with _StopRequest().installed() as stop:  # from the start: set-up and saves are covered too
            try:
                trainer = _Trainer(
                    recipe, info=info, data=data, out=Path(out), max_steps=max_steps, resume=resume,
                    init_from=init_from, overrides={**(overrides or {}), **_flag_overrides(
                        epochs=epochs, batch_size=batch_size, seed=seed, compile=compile, workers=workers)},
                    cache_dir=cache_dir, data_limit=data_limit, progress=progress, tensorboard=tensorboard,
                    time_budget=budget, deadline=None if budget is None else started + budget, stop=stop)
            except _StoppedDuringSetUp as stopped:
                return TrainResult(out=Path(out), step=0, epochs_completed=0, last_loss=None, finished=False,
                                   interrupted=stopped.reason != "time budget", exported=False,
                                   stopped_by=f"{stopped.reason} during set-up")
            return trainer.run()
    finally:
        if owns_process_group:
            cleanup_distributed()


def _flag_overrides(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def resolve_run_recipe(recipe: str | Path | Recipe | None, *, out: Path, resume: bool,
                       overrides: Mapping[str, Any]) -> tuple[Recipe, dict[str, Any] | None]:
    """The recipe to run, and the checkpoint to resume (None for a new run)."""
    checkpoint = out / CHECKPOINT_FILE
    if not resume:
        if recipe is None:
            raise UserError("a recipe is needed to start a run (--recipe NAME)")
        if checkpoint.exists():
            raise UserError(f"{out}: already holds a run ({CHECKPOINT_FILE}); pass --resume to continue it, "
                            f"or choose another --out")
        return load_recipe(recipe, overrides=overrides), None
    payload = load_checkpoint(checkpoint)
    saved = recipe_from_dict(payload["recipe"], source=str(checkpoint))
    if recipe is not None:
        name = recipe.name if isinstance(recipe, Recipe) else load_recipe(recipe).name
        if name != saved.name:
            raise UserError(f"{out}: the run was started with recipe {saved.name!r}, not {name!r}")
    requested = saved.override(overrides)
    before, after = saved.to_dict(), requested.to_dict()
    changed = [key for key in after if key not in EXECUTION_FIELDS and after[key] != before[key]]
    if changed:
        raise UserError(f"{out}: --resume cannot change {changed[0]} ({before[changed[0]]!r} -> "
                        f"{after[changed[0]]!r}); only {', '.join(EXECUTION_FIELDS)} may change on resume")
    return requested, payload


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device` (None: full fp32)."""
    if precision == "fp32" or device.type not in ("cpu", "cuda"):
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError(f"precision bf16: {torch.cuda.get_device_name(device)} does not support bfloat16; "
                            f"use fp16 or auto")
        return torch.bfloat16
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_fast_bf16() else None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class _StopRequest:
    """Set by SIGTERM or SIGINT; the loop saves at the next step boundary and returns. A second signal of
    the same kind does what it would have done without us (SIGINT: KeyboardInterrupt)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)
    NAMES = ("SIGTERM", "SIGINT")

    def __init__(self) -> None:
        self.requested: str | None = None  # the signal's name
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.requested == name:  # asked twice: stop now
            signal.signal(signum, self._previous[signum])
            signal.raise_signal(signum)
            return
        self.requested = name

    @contextlib.contextmanager
    def installed(self) -> Iterator[_StopRequest]:
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield self
            return
        self._previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}
        try:
            yield self
        finally:
            for signum, previous in self._previous.items():
                signal.signal(signum, previous)


class _StoppedDuringSetUp(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


def _at(table: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """table[step] for a 0-dim device step (`table[step]` itself would read the index on the host)."""
    return table.index_select(0, step.view(1)).view(())


class _Trainer:
    def __init__(self, recipe: str | Path | Recipe | None, *, info: DistInfo, data: str | Path, out: Path,
                 max_steps: int | None, resume: bool, overrides: Mapping[str, Any], cache_dir: str | Path | None,
                 data_limit: int | None, progress: bool, init_from: str | Path | None = None,
                 tensorboard: bool | None = None, time_budget: float | None = None, deadline: float | None = None,
                 stop: _StopRequest | None = None) -> None:
        if max_steps is not None and max_steps < 1:
            raise UserError(f"--max-steps must be >= 1, got {max_steps}")
        self.run_folder = RunFolder(out)
        # The output rule, before any work: new, empty or an earlier run; never the data or the source model.
        sources = [p for p in (data, init_from) if p is not None and Path(p).exists()]
        check_output_folder(out, RUN_LAYOUT, sources=sources)
        self.time_budget, self.deadline = time_budget, deadline
        self.stop = stop or _StopRequest()
        marker = self.run_folder.read_marker()
        self.plan = (Plan.from_dict(marker["plan"], source=str(self.run_folder.marker))
                     if marker.get("plan") and time_budget is not None else None)
        # A budgeted run continues what its folder holds: rerunning the same command resumes it.
        continuing = resume or (time_budget is not None and self.run_folder.checkpoint.is_file())
        if resume and init_from is not None:
            raise UserError("--init-from starts a new cycle and --resume continues one: give one of them")
        continued_source, init_from = (init_from, None) if continuing else (None, init_from)
        overrides = dict(overrides)
        # With a budget, --epochs is the most the plan may fit; the warm-up's share comes from the recipe itself.
        self.max_epochs = overrides.pop("epochs", None) if time_budget is not None else None
        if self.plan is not None:
            overrides.update(self.plan.recipe_overrides())
        self.info = info
        self.device = info.device
        self.out = out
        self.max_steps = max_steps
        self.progress = progress
        self.tensorboard = tensorboard
        self.recipe, self.payload = resolve_run_recipe(recipe, out=out, resume=continuing, overrides=overrides)
        recipe = self.recipe
        if marker.get("recipe") not in (None, recipe.name):
            raise UserError(f"{out}: holds a run of recipe {marker['recipe']!r}, not {recipe.name!r}; choose another "
                            f"--out")
        if self.payload is not None and self.payload["state"].get("plan") and self.plan is None:
            self.plan = Plan.from_dict(self.payload["state"]["plan"], source=str(self.run_folder.checkpoint))
        self.source: SourceModel | None = None if init_from is None else load_source(init_from, recipe)
        self._check_stop()

        self.data = load_train_data(data, base_size=recipe.data_size, cache_dir=cache_dir, limit=data_limit,
                                    workers=recipe.workers, progress=progress and info.is_main)
        if self.payload is not None and (self.payload["data"]["sha256"], self.payload["data"]["num_images"]) != (
                self.data.info.sha256, self.data.info.num_images):
            raise UserError(f"--data {data}: not the data this run was trained on "
                            f"({self.payload['data']['name']}, {self.payload['data']['num_images']} images, "
                            f"sha256 {self.payload['data']['sha256'][:12]}...)")
        self._check_stop()
        if data_limit is not None and recipe.batch_size > len(self.data):
            # a quick check on a few images: one batch of all of them (the learning rate follows the batch)
            batch_size = len(self.data) - len(self.data) % info.world_size
            warnings.warn(f"--data-limit {data_limit}: a batch of {batch_size} images, not the recipe's "
                          f"{recipe.batch_size}", stacklevel=2)
            self.recipe = recipe = recipe.override({"batch_size": batch_size})
        self.sampler = EpochSampler(len(self.data), batch_size=recipe.batch_size, seed=recipe.seed,
                                    rank=info.rank, world_size=info.world_size)
        self.loader = BatchLoader(self.data, self.sampler, device=self.device, workers=recipe.workers)
        self.steps_per_epoch = self.sampler.steps_per_epoch
        # The warm-up's share of the recipe's length: a fitted plan keeps it (the paper's 10 of 800 epochs).
        self.warmup_share = recipe.optim.warmup_epochs / recipe.epochs
        self._lay_out_schedule()
        self.peak_lr = recipe.optim.peak_lr(recipe.batch_size)

        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.set_float32_matmul_precision("high")  # TF32 matmuls and convolutions
        self.augment = BatchedAugment(recipe.augment).prepare(self.device)  # its constants: no copy in a step
        self.param_mean, self.param_std = self._parameter_statistics()
        torch.manual_seed(recipe.seed)  # the same initial weights on every rank
        stats = {"param_mean": self.param_mean, "param_std": self.param_std} if recipe.method.equimod else {}
        self.method: SSLMethod = build_method(recipe.method, build_backbone(recipe), **stats)
        if self.source is not None:
            initialise_from(self.method, self.source)
        self.method = convert_sync_batchnorm(self.method, info).to(self.device)
        if recipe.channels_last:
            self.method = self.method.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.method, recipe.optim, batch_size=recipe.batch_size)
        self.autocast_dtype = autocast_dtype(recipe.precision, self.device)
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.autocast_dtype == torch.float16 and self.device.type == "cuda")
        seed_everything(recipe.seed, rank=info.rank)
        self.generator = torch.Generator(device=self.device).manual_seed(recipe.seed * 1_000_003 + info.rank)
        self.state = TrainingState()
        if self.source is not None:
            self.state.extra.update(history=plain(self.source.history), init_from_sha256=self.source.weights_sha256)
        if self.payload is not None:
            self._restore(self.payload)
            self._check_same_source(continued_source)
        self.saved_step = self.state.step if self.payload is not None else -1

        # Built once on the device: every step's rate and momentum, the rate the optimiser reads,
        # the step counter that indexes them, and the first non-finite loss's step (-1: none).
        self._build_tables()
        self.lr_now = self.lr_table[self.state.step].clone()  # set up once: a Python index is fine here
        set_lr(self.optimizer, self.lr_now)
        self.step_t = torch.full((), self.state.step, dtype=torch.long, device=self.device)
        self.bad_step = torch.full((), -1, dtype=torch.long, device=self.device)

        self.model: torch.nn.Module = self.method
        if info.is_distributed:
            self.model = DistributedDataParallel(
                self.method, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.train_step = self._train_step
        if recipe.compile == "model":
            self.model.compile(mode=recipe.compile_mode)  # in place: state_dict keys stay the plain module's
        elif recipe.compile == "step":
            self.train_step = torch.compile(self._train_step, mode=recipe.compile_mode)
        self._check_stop()

    # ---- setup -----------------------------------------------------------------------------
    def _check_stop(self) -> None:
        """Between set-up stages: a signal, or a budget already spent, ends the call before training."""
        if self.stop.requested:
            raise _StoppedDuringSetUp(self.stop.requested)
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise _StoppedDuringSetUp("time budget")

    def _lay_out_schedule(self) -> None:
        """The schedule's length and warm-up: the plan's with a time budget, else the recipe's epochs."""
        if self.plan is not None:
            if self.plan.steps_per_epoch != self.steps_per_epoch:
                raise UserError(f"{self.run_folder.marker}: planned for {self.plan.steps_per_epoch} steps an epoch, "
                                f"this data and batch size give {self.steps_per_epoch}; choose another --out")
            self.total_steps, self.warmup_steps = self.plan.total_steps, self.plan.warmup_steps
            return
        self.total_steps = self.recipe.epochs * self.steps_per_epoch
        warmup = self.recipe.optim.warmup_epochs * self.steps_per_epoch
        # a warm-up never rounds away: step 0's rate is then 0 whatever the length (the budget relies on it)
        self.warmup_steps = min(max(1, round(warmup)) if warmup > 0 else 0, self.total_steps)

    def _build_tables(self) -> None:
        self.lr_table = lr_schedule(total_steps=self.total_steps, warmup_steps=self.warmup_steps,
                                    peak_lr=self.peak_lr, device=self.device)
        self.momentum_table = (momentum_schedule(self.total_steps, self.recipe.method.momentum_base,
                                                 device=self.device)
                               if self.recipe.method.momentum_target else None)

    def _parameter_statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """EquiMod's standardisation statistics: the checkpoint's on resume, else sampled now."""
        if self.payload is not None:
            return self.payload["param_mean"], self.payload["param_std"]
        if self.source is not None and self.recipe.method.equimod:  # the statistics the heads learnt with
            return self.source.heads["param_mean"], self.source.heads["param_std"]
        if not self.recipe.method.equimod:  # only EquiMod reads the parameters: neutral statistics
            dim = self.recipe.method.param_dim
            return torch.zeros(dim), torch.ones(dim)
        size = (self.recipe.data_size, self.recipe.data_size)
        return parameter_statistics(self.recipe.augment, image_size=size,
                                    num_samples=self.recipe.param_stats_samples, seed=self.recipe.seed)

    def _restore(self, payload: dict[str, Any]) -> None:
        self.method.load_state_dict(payload["method"])
        self.optimizer.load_state_dict(payload["optimizer"])
        if payload["scaler"] is not None and self.scaler.is_enabled():
            self.scaler.load_state_dict(payload["scaler"])
        rng = payload["rng"]
        if len(rng) != self.info.world_size:
            raise UserError(f"{self.out / CHECKPOINT_FILE}: saved by {len(rng)} processes; resume with the same "
                            f"number (this run has {self.info.world_size})")
        restore_rng(rng[self.info.rank], self.generator, self.device)
        self.state = training_state(payload)

    def _check_same_source(self, init_from: str | Path | None) -> None:
        """A rerun of `--init-from X --time-budget ...` continues its run only if that run started from X."""
        if init_from is None:
            return
        from equimod_zoo.weights import locate_weights

        if locate_weights(init_from).sha256 != self.state.extra.get("init_from_sha256"):
            raise UserError(f"{self.out}: holds a run that did not start from --init-from {init_from}; choose "
                            f"another --out")

    # ---- the loop --------------------------------------------------------------------------
    def run(self) -> TrainResult:
        recipe, info = self.recipe, self.info
        self.stop_at = self._stop_at()
        if info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            remove_debris(self.out)  # what a killed attempt left half-written
            self._write_run_files()
        log = RunLog(self.out, start_step=self.state.step, total_steps=self.stop_at, enabled=info.is_main,
                     progress=self.progress, description=recipe.name, tensorboard=self.tensorboard)
        stopped_by = None
        try:
            if self.payload is not None and info.is_main and self._model_behind():
                self._export()  # a rerun finds the model folder behind its checkpoint: bring it up to date first
            stopped_by = self._loop(log)
            self._check_finite()
            if self.state.step != self.saved_step:
                self._save()
            else:
                self._account_time()
        finally:
            log.close()
        if info.is_distributed:
            dist.barrier()
        finished = self.state.step >= self.total_steps
        history = [plain(c) for c in self.state.extra.get("history", ())]
        if stopped_by is None and not finished:
            stopped_by = "max steps"
        return TrainResult(out=self.out, step=self.state.step, epochs_completed=self.state.epochs_completed,
                           last_loss=self.state.last_loss, finished=finished,
                           interrupted=stopped_by in _StopRequest.NAMES, exported=self.state.step == self.saved_step,
                           stopped_by=stopped_by, planned_steps=self.plan.total_steps if self.plan else None,
                           steps_per_epoch=self.steps_per_epoch, cycles=len(history) + 1,
                           model_epochs=sum(c.get("epochs") or 0 for c in history) + self.state.epochs_completed,
                           model_steps=sum(c.get("steps") or 0 for c in history) + self.state.step)

    def _stop_at(self) -> int:
        return self.total_steps if self.max_steps is None else min(self.total_steps, self.max_steps)

    def _write_run_files(self) -> None:
        self.run_folder.write_marker(recipe=self.recipe.name, plan=self.plan.to_dict() if self.plan else None)
        atomic_write_text(self.run_folder.recipe, self.recipe.to_yaml())

    def _model_behind(self) -> bool:
        try:
            cycles = ModelConfig.read(self.run_folder.model).equimod.cycles
        except Exception:  # missing or unreadable: a save was cut short
            return True
        return not cycles or (cycles[-1].steps or 0) < self.state.step

    def _loop(self, log: RunLog) -> str | None:
        """Train until `stop_at` steps; the signal's name, or "time budget", when one cut it short.

        The host reads the device only at boundaries: logged steps, epoch ends (checkpoints) and
        `stop_at`. Under torchrun the ranks also agree on a stop only there (a collective).
        """
        recipe = self.recipe
        self.model.train()
        self.state.extra["hardware"] = hardware_name(self.device, self.info.world_size)
        self.timed_since = last_time = time.perf_counter()
        last_step = self.state.step
        fit_now = self.time_budget is not None and self.plan is None
        while self.state.step < self.stop_at:
            for images in self.loader.epoch(self.state.epoch, start_step=self.state.step_in_epoch):
                if fit_now:  # step 0, then the measurements and the plan, which are not training time
                    loss, logs, seconds = self._first_step_and_plan(images, log)
                    fit_now, recipe = False, self.recipe
                    self.timed_since = last_time = time.perf_counter() - seconds
                else:
                    loss, logs = self.train_step(images)
                    self._advance()
                step = self.state.step
                due_log = step % recipe.log_every == 0 or step == self.stop_at
                epoch_end = self.state.step_in_epoch == 0
                if due_log:
                    self._check_finite()
                    now = time.perf_counter()
                    images_per_s = (step - last_step) * recipe.batch_size / max(now - last_time, 1e-9)
                    last_time, last_step = now, step
                    self._log(log, step, loss, logs, images_per_s)
                if epoch_end and self.state.epochs_completed % recipe.checkpoint_every == 0:
                    self._check_finite()
                    self._save()
                if step >= self.stop_at:
                    break
                if due_log or epoch_end or not self.info.is_distributed:
                    reason = self._should_stop(lookahead=self._steps_to_next_check())
                    if reason is not None:
                        return reason
        return None

    def _steps_to_next_check(self) -> int:
        """Steps until the loop next asks whether to stop (every step on one process)."""
        if not self.info.is_distributed:
            return 1
        to_log = self.recipe.log_every - self.state.step % self.recipe.log_every
        return min(to_log, self.steps_per_epoch - self.state.step_in_epoch)

    # ---- the time budget -------------------------------------------------------------------
    def _first_step_and_plan(self, images: torch.Tensor,
                             log: RunLog) -> tuple[torch.Tensor, dict[str, torch.Tensor], float]:
        """Step 0 for real (its rate and momentum do not depend on the run's length), a few timed steps
        undone afterwards, one dress rehearsal of the final save; then the plan, fitted and recorded.
        Returns step 0's loss, logs and seconds."""
        outputs: list[Any] = []
        first = self._timed(lambda: outputs.append(self.train_step(images)))
        loss, logs = outputs[0][0].clone(), {k: v.clone() for k, v in outputs[0][1].items()}
        self._advance()
        step_seconds = first
        if self.info.world_size > 1 or first < CALIBRATION_SHARE * self.time_budget:
            step_seconds = self._calibrate(images, first)
        save_seconds = self._rehearse_save()
        plan = None
        if self.info.is_main:
            plan = fit_plan(budget_seconds=self.time_budget, seconds_left=self.deadline - time.monotonic(),
                            costs=Costs(step_seconds=step_seconds, save_seconds=save_seconds),
                            steps_per_epoch=self.steps_per_epoch, warmup_share=self.warmup_share,
                            steps_done=self.state.step, max_epochs=self.max_epochs)
        if self.info.is_distributed:
            shared = [plan]
            dist.broadcast_object_list(shared, src=0)
            plan = shared[0]
        self.plan = plan
        self.recipe = self.recipe.override(plan.recipe_overrides())
        self.total_steps, self.warmup_steps = plan.total_steps, plan.warmup_steps
        self._build_tables()
        self.state.extra["plan"] = plan.to_dict()
        self.stop_at = self._stop_at()
        log.set_total(self.stop_at)
        if self.info.is_main:
            self._write_run_files()
        return loss, logs, first

    def _timed(self, step: Any) -> float:
        """Seconds one training step takes on the device (synchronised: for calibration only)."""
        self._synchronize()
        start = time.perf_counter()
        step()
        self._synchronize()
        return time.perf_counter() - start

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _calibrate(self, images: torch.Tensor, first: float) -> float:
        """The median of a few more timed steps on the same batch; every state they touch is put back.

        Under torchrun every rank runs rank 0's count of steps (each step is a collective)."""
        count = max(1, min(CALIBRATION_STEPS, round(CALIBRATION_SECONDS / max(first, 1e-6))))
        if self.info.is_distributed:
            shared = torch.tensor(count, device=self.device)
            dist.broadcast(shared, src=0)
            count = int(shared)
        saved = self._snapshot()
        try:
            times = sorted(self._timed(lambda: self.train_step(images)) for _ in range(count))
        finally:
            self._restore_snapshot(saved)
        return times[len(times) // 2]

    def _snapshot(self) -> dict[str, Any]:
        return {
            "method": {k: v.detach().clone() for k, v in self.method.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "scaler": copy.deepcopy(self.scaler.state_dict()) if self.scaler.is_enabled() else None,
            "rng": rng_state(self.generator, self.device),
            "tensors": [t.clone() for t in (self.step_t, self.bad_step, self.lr_now)],
        }

    def _restore_snapshot(self, saved: dict[str, Any]) -> None:
        self.method.load_state_dict(saved["method"])
        self.optimizer.load_state_dict(saved["optimizer"])
        set_lr(self.optimizer, self.lr_now)  # load_state_dict put a copy of the rate in each group
        if saved["scaler"] is not None:
            self.scaler.load_state_dict(saved["scaler"])
        restore_rng(saved["rng"], self.generator, self.device)
        for tensor, value in zip((self.step_t, self.bad_step, self.lr_now), saved["tensors"]):
            tensor.copy_(value)

    def _rehearse_save(self) -> float:
        """Seconds a save takes (an export and a checkpoint), written into a staging folder and thrown away."""
        if not self.info.is_main:
            return 0.0
        start = time.perf_counter()
        with staging_dir(self.run_folder.model) as stage:
            self._write_checkpoint(stage / CHECKPOINT_FILE, [rng_state(self.generator, self.device)])
            write_model(stage, self.method, self.recipe, **self._model_facts())
        return time.perf_counter() - start

    # ---- one step --------------------------------------------------------------------------
    def _train_step(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One optimiser step on a batch; returns the detached loss and the method's logs, on the device.

        No host synchronisation: the schedules are indexed with the device step counter and the
        rate is written into the optimiser's own tensor, so this whole function can be compiled.
        """
        method = self.method
        self.lr_now.copy_(_at(self.lr_table, self.step_t))
        x1, p1 = self.augment(images, view=0, generator=self.generator)
        x2, p2 = self.augment(images, view=1, generator=self.generator)
        extra = {"x0": self.augment.identity(images), "p1": p1, "p2": p2} if method.uses_params else {}
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None):
            output = self.model(x1, x2, **extra)
        for group in self.optimizer.param_groups:  # zero_grad(set_to_none=True), without its profiler hook
            for param in group["params"]:
                param.grad = None
        if self.scaler.is_enabled():  # fp16 only; its inf check reads found_inf on the host
            self.scaler.scale(output.loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            output.loss.backward()
            self.optimizer.step()
        if self.momentum_table is not None:
            method.update_target(_at(self.momentum_table, self.step_t))
        self.step_t.add_(1)
        loss = output.loss.detach()
        self.bad_step.copy_(torch.where((self.bad_step < 0) & ~torch.isfinite(loss), self.step_t, self.bad_step))
        return loss, output.logs

    def _log(self, log: RunLog, step: int, loss: torch.Tensor, logs: dict[str, torch.Tensor],
             images_per_s: float) -> None:
        """One log row for step `step` (the steps done): the only place the losses come to the host."""
        recipe = self.recipe
        # One collective for every logged scalar: the mean over the ranks.
        names = ["loss", *logs]
        values = reduce_mean(torch.stack([loss.float(), *(v.float() for v in logs.values())])).tolist()
        self.state.last_loss = values[0]
        lr = lr_at(step - 1, total_steps=self.total_steps, warmup_steps=self.warmup_steps, peak_lr=self.peak_lr)
        row = {"step": step, "epoch": round(step / self.steps_per_epoch, 4), "lr": lr, **dict(zip(names, values))}
        if self.momentum_table is not None:
            row["momentum"] = byol_momentum(step - 1, self.total_steps, recipe.method.momentum_base)
        row["images_per_s"] = round(images_per_s, 1)
        log.log(row)
        log.update(step, status=f"loss {self.state.last_loss:.4f}  {images_per_s:,.0f} img/s")

    def _advance(self) -> None:
        state = self.state
        state.step += 1
        state.step_in_epoch += 1
        if state.step_in_epoch == self.steps_per_epoch:
            state.epoch += 1
            state.step_in_epoch = 0
            state.epochs_completed = state.epoch

    def _should_stop(self, *, lookahead: int) -> str | None:
        """A signal's name, "time budget" when `lookahead` more steps and the final save would pass the
        deadline, else None; under torchrun every rank gets the same answer."""
        reason = self.stop.requested
        if reason is None and self.deadline is not None and self.plan is not None:
            needed = lookahead * self.plan.costs.step_seconds + final_reserve(self.plan.costs, self.time_budget)
            if time.monotonic() + needed > self.deadline:
                reason = "time budget"
        if self.info.is_distributed:  # every rank must stop at the same step
            codes = (None, "time budget", *_StopRequest.NAMES)
            flag = torch.tensor(float(codes.index(reason)), device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            reason = codes[int(flag.item())]
        return reason

    def _check_finite(self) -> None:
        bad = self.bad_step.clone()
        if self.info.is_distributed:
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        bad_step = int(bad)
        if bad_step >= 0:
            kept = f"; the last good checkpoint ({self.out / CHECKPOINT_FILE}) is kept" \
                if (self.out / CHECKPOINT_FILE).is_file() else ""
            raise NonFiniteLossError(
                f"the loss became non-finite at step {bad_step} (epoch {(bad_step - 1) // self.steps_per_epoch}) "
                f"of recipe {self.recipe.name}{kept}; lower the learning rate or use another precision")

    def _account_time(self) -> None:
        """Add the loop's wall time since the last call to the run's total (kept across resumes)."""
        now = time.perf_counter()
        self.state.extra["train_seconds"] = self.state.extra.get("train_seconds", 0.0) + now - self.timed_since
        self.timed_since = now

    # ---- saving ----------------------------------------------------------------------------
    def _save(self) -> None:
        """Export the model folder, then write the checkpoint: a kill in between leaves the model folder
        ahead of the checkpoint, never behind it (the resumed run recomputes the same steps exactly)."""
        self._account_time()
        states = [rng_state(self.generator, self.device)]
        if self.info.is_distributed:
            gathered: list[Any] = [None] * self.info.world_size
            dist.all_gather_object(gathered, states[0])
            states = gathered
        if self.info.is_main:
            self._export()
            self._write_checkpoint(self.run_folder.checkpoint, states)
        self.saved_step = self.state.step

    def _export(self) -> None:
        export_run(self.run_folder.model, self.method, self.recipe, record_from=self.out, **self._model_facts())

    def _model_facts(self) -> dict[str, Any]:
        extra = self.state.extra
        return dict(data=self.data.info.to_dict(), epochs_completed=self.state.epochs_completed,
                    steps=self.state.step, compute=compute_record(extra, self.state.epochs_completed),
                    history=extra.get("history", ()), init_from_sha256=extra.get("init_from_sha256"),
                    budget=Budget(self.plan.budget_seconds, self.plan.total_steps) if self.plan else None)

    def _write_checkpoint(self, path: Path, rng_states: list[dict[str, Any]]) -> None:
        save_checkpoint(path, state=self.state, method=self.method, optimizer=self.optimizer, scaler=self.scaler,
                        rng_states=rng_states, param_mean=self.param_mean, param_std=self.param_std,
                        recipe=self.recipe.to_dict(), data=self.data.info.to_dict())


