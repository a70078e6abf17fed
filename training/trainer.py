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

A run lives in one folder RUN: recipe.yaml, log.csv, tb/, checkpoint.pt and, at the end, the
exported model folder (config.json, model.safetensors, equimod_heads.safetensors). Checkpoints
are atomic, written every `checkpoint_every` epochs, at `max_steps`, and on SIGTERM (at the next
step boundary); `resume=True` continues exactly where the checkpoint left off. A non-finite loss
stops the run with an error naming the step and leaves the last good checkpoint untouched.
"""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from equimod_zoo.atomic import atomic_write_text
from equimod_zoo.devices import cpu_has_fast_bf16
from equimod_zoo.equimod.augment import BatchedAugment, parameter_statistics
from equimod_zoo.errors import NonFiniteLossError, UserError
from equimod_zoo.training.checkpoint import (
    CHECKPOINT_FILE,
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
from equimod_zoo.training.export import build_backbone, compute_record, export_run
from equimod_zoo.training.methods import SSLMethod, build_method, byol_momentum, momentum_schedule
from equimod_zoo.training.optim import build_optimizer, lr_at, lr_schedule, set_lr
from equimod_zoo.training.recipe import EXECUTION_FIELDS, Recipe, load_recipe, recipe_from_dict
from equimod_zoo.training.run_log import RunLog

RECIPE_FILE = "recipe.yaml"



@dataclass(frozen=True)
class TrainResult:
    """How a call to `train` ended."""

    out: Path
    step: int  # optimiser steps completed, in total
    epochs_completed: int
    last_loss: float | None
    finished: bool  # every epoch of the recipe is done
    interrupted: bool  # stopped by SIGTERM, with a checkpoint to resume from
    exported: bool  # the model folder in `out` is up to date


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
    device: str | torch.device | None = None,
    compile: bool | str | None = None,
    workers: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    cache_dir: str | Path | None = None,
    data_limit: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Pre-train a backbone with `recipe` on `data`, into the run folder `out`.

    Args:
        recipe: a recipe name (training/recipes/NAME.yaml), a YAML file or a `Recipe`; with
            `resume`, None means the run's own recipe.
        data: a parquet file or folder (e.g. $EQUIMOD_DATA/cifar10-jpeg), an image folder, or a
            Hugging Face dataset id.
        out: the run folder.
        epochs, batch_size, seed, compile, workers: override the recipe's values (compile: "off",
            "model" or "step"; True means "model").
        max_steps: stop after this many optimiser steps in total (a resumable checkpoint and an
            export are still written).
        resume: continue from out/checkpoint.pt. Execution settings (workers, compile, log and
            checkpoint intervals) may change; anything that changes the computation may not.
        init_from: a zoo name or model folder (with its heads) of the recipe's method and
            architecture: start a new cycle from its weights instead of random ones.
        device: "cpu", "cuda", "cuda:1"...; default: this process's GPU if there is one.
        overrides: further recipe overrides, dotted keys allowed (`{"optim.lr": 1.0}`).
        cache_dir: where decoded datasets are cached (default: $EQUIMOD_ZOO_CACHE or ~/.cache/equimod_zoo).
        data_limit: train on the first `data_limit` images only (quick checks).
        progress: show a progress bar.
    """
    owns_process_group = not (dist.is_available() and dist.is_initialized())
    info = setup_distributed(device=device)
    try:
        return _Trainer(
            recipe, info=info, data=data, out=Path(out), max_steps=max_steps, resume=resume, init_from=init_from,
            overrides={**(overrides or {}), **_flag_overrides(epochs=epochs, batch_size=batch_size, seed=seed,
                                                              compile=compile, workers=workers)},
            cache_dir=cache_dir, data_limit=data_limit, progress=progress,
        ).run()
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
    """Set by SIGTERM; the loop checkpoints at the next step boundary and returns."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    @contextlib.contextmanager
    def installed(self) -> Iterator[_StopRequest]:
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield self
            return
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, self._previous)


def _at(table: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """table[step] for a 0-dim device step (`table[step]` itself would read the index on the host)."""
    return table.index_select(0, step.view(1)).view(())


class _Trainer:
    def __init__(self, recipe: str | Path | Recipe | None, *, info: DistInfo, data: str | Path, out: Path,
                 max_steps: int | None, resume: bool, overrides: Mapping[str, Any], cache_dir: str | Path | None,
                 data_limit: int | None, progress: bool, init_from: str | Path | None = None) -> None:
        if max_steps is not None and max_steps < 1:
            raise UserError(f"--max-steps must be >= 1, got {max_steps}")
        if resume and init_from is not None:
            raise UserError("--init-from starts a new cycle and --resume continues one: give one of them")
        self.info = info
        self.device = info.device
        self.out = out
        self.max_steps = max_steps
        self.progress = progress
        self.recipe, self.payload = resolve_run_recipe(recipe, out=out, resume=resume, overrides=overrides)
        recipe = self.recipe
        self.source: SourceModel | None = None if init_from is None else load_source(init_from, recipe)

        self.data = load_train_data(data, base_size=recipe.data_size, cache_dir=cache_dir, limit=data_limit,
                                    workers=recipe.workers, progress=progress and info.is_main)
        if self.payload is not None and (self.payload["data"]["sha256"], self.payload["data"]["num_images"]) != (
                self.data.info.sha256, self.data.info.num_images):
            raise UserError(f"--data {data}: not the data this run was trained on "
                            f"({self.payload['data']['name']}, {self.payload['data']['num_images']} images, "
                            f"sha256 {self.payload['data']['sha256'][:12]}...)")
        self.sampler = EpochSampler(len(self.data), batch_size=recipe.batch_size, seed=recipe.seed,
                                    rank=info.rank, world_size=info.world_size)
        self.loader = BatchLoader(self.data, self.sampler, device=self.device, workers=recipe.workers)
        self.steps_per_epoch = self.sampler.steps_per_epoch
        self.total_steps = recipe.epochs * self.steps_per_epoch
        self.warmup_steps = min(round(recipe.optim.warmup_epochs * self.steps_per_epoch), self.total_steps)
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
            self.state.extra.update(history=self.source.history, init_from_sha256=self.source.weights_sha256)
        if self.payload is not None:
            self._restore(self.payload)
        self.saved_step = self.state.step if self.payload is not None else -1

        # Built once on the device: every step's rate and momentum, the rate the optimiser reads,
        # the step counter that indexes them, and the first non-finite loss's step (-1: none).
        self.lr_table = lr_schedule(total_steps=self.total_steps, warmup_steps=self.warmup_steps,
                                    peak_lr=self.peak_lr, device=self.device)
        self.momentum_table = (momentum_schedule(self.total_steps, recipe.method.momentum_base, device=self.device)
                               if recipe.method.base == "byol" else None)
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

    # ---- setup -----------------------------------------------------------------------------
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

    # ---- the loop --------------------------------------------------------------------------
    def run(self) -> TrainResult:
        recipe, info = self.recipe, self.info
        stop_at = self.total_steps if self.max_steps is None else min(self.total_steps, self.max_steps)
        if info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            remove_debris(self.out)  # what a killed attempt left half-written
            atomic_write_text(self.out / RECIPE_FILE, recipe.to_yaml())
        log = RunLog(self.out, start_step=self.state.step, total_steps=stop_at, enabled=info.is_main,
                     progress=self.progress, description=recipe.name)
        interrupted = False
        try:
            with _StopRequest().installed() as stop:
                interrupted = self._loop(stop, stop_at=stop_at, log=log)
                self._check_finite()
                if self.state.step != self.saved_step:
                    self._save()
                else:
                    self._account_time()
        finally:
            log.close()
        finished = self.state.step >= self.total_steps
        exported = False
        if not interrupted and info.is_main:
            export_run(self.out, self.method, recipe, data=self.data.info.to_dict(),
                       epochs_completed=self.state.epochs_completed, steps=self.state.step,
                       compute=compute_record(self.state.extra, self.state.epochs_completed),
                       history=self.state.extra.get("history"),
                       init_from_sha256=self.state.extra.get("init_from_sha256"))
            exported = True
        if info.is_distributed:
            dist.barrier()
        return TrainResult(out=self.out, step=self.state.step, epochs_completed=self.state.epochs_completed,
                           last_loss=self.state.last_loss, finished=finished, interrupted=interrupted,
                           exported=exported)

    def _loop(self, stop: _StopRequest, *, stop_at: int, log: RunLog) -> bool:
        """Train until `stop_at` steps; True if SIGTERM cut it short.

        The host reads the device only at boundaries: logged steps, epoch ends (checkpoints) and
        `stop_at`. Under torchrun the ranks also agree on a SIGTERM only there (a collective).
        """
        recipe = self.recipe
        self.model.train()
        last_time, last_step = time.perf_counter(), self.state.step
        self.state.extra["hardware"] = hardware_name(self.device, self.info.world_size)
        self.timed_since = last_time
        while self.state.step < stop_at:
            for images in self.loader.epoch(self.state.epoch, start_step=self.state.step_in_epoch):
                loss, logs = self.train_step(images)
                self._advance()
                step = self.state.step
                due_log = step % recipe.log_every == 0 or step == stop_at
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
                if step >= stop_at:
                    break
                if (due_log or epoch_end or not self.info.is_distributed) and self._should_stop(stop):
                    return True
        return False

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

    def _should_stop(self, stop: _StopRequest) -> bool:
        requested = stop.requested
        if self.info.is_distributed:  # every rank must stop at the same step
            flag = torch.tensor(float(requested), device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            requested = bool(flag.item())
        return requested

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

    def _save(self) -> None:
        self._account_time()
        states = [rng_state(self.generator, self.device)]
        if self.info.is_distributed:
            gathered: list[Any] = [None] * self.info.world_size
            dist.all_gather_object(gathered, states[0])
            states = gathered
        if self.info.is_main:
            save_checkpoint(self.out / CHECKPOINT_FILE, state=self.state, method=self.method,
                            optimizer=self.optimizer, scaler=self.scaler, rng_states=states,
                            param_mean=self.param_mean, param_std=self.param_std,
                            recipe=self.recipe.to_dict(), data=self.data.info.to_dict())
        self.saved_step = self.state.step
