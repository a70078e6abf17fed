"""The training step never waits for the device, and compiled it computes what the eager step does.

Host-device synchronisations are counted honestly on the CPU: every tensor operation of a step
goes through a TorchDispatchMode that records the operations that force the host to wait for a
GPU (`_local_scalar_dense` behind item/bool/int/float, `nonzero` behind boolean indexing and
data-dependent shapes, `masked_select`) or that copy a tensor built from Python values to the
device every step (`lift_fresh`), indexing with a boolean mask (its `nonzero` runs inside the
kernel), plus `Tensor.tolist`/`cpu`/`numpy`, which read tensor data
without a dispatched operation. On a CUDA machine the same steps also run under
`torch.cuda.set_sync_debug_mode("error")`.

Every such operation is counted wherever it runs, in our code or in torch's, and reported at the
innermost frame of ours. A frame is ours when its file lies inside one of our package folders
(compared by path components, so a virtual environment anywhere, beside the checkout with a name
that starts like it, or inside it, never makes torch's files ours).
"""
from __future__ import annotations

import functools
import traceback
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import equimod_zoo
import equimod_zoo.training
from equimod_zoo.training.distributed import setup_distributed
from equimod_zoo.training.trainer import _Trainer
from toy_training import METHODS, tiny_recipe, write_toy_parquet

SYNC_OPS = {"aten::_local_scalar_dense", "aten::item", "aten::is_nonzero", "aten::nonzero", "aten::nonzero_static",
            "aten::masked_select", "aten::lift_fresh"}
BOOLEAN_INDEXING_OPS = {"aten::index", "aten::index_put", "aten::index_put_", "aten::_index_put_impl_"}
SYNC_METHODS = ("tolist", "cpu", "numpy")
PACKAGE_ROOT = Path(__file__).resolve().parents[1]
# The folders our code is imported from: the core and the trainer (installed as equimod_zoo.training).
OUR_FOLDERS = tuple(Path(module.__file__).resolve().parent for module in (equimod_zoo, equimod_zoo.training))
# The augmentations' CPU path runs an operation on the samples that get it, reading their count
# (`nonzero`) on the host; the GPU path blends instead (test_the_whole_step_makes_no_host_sync).
CPU_SUBSET_SYNC = ("aten::nonzero", "augment.py", "apply_where")


@functools.lru_cache(maxsize=None)
def is_ours(filename: str) -> bool:
    """Whether a frame's file is in our packages: by path components, never by string prefix."""
    path = Path(filename).resolve()
    return any(path.is_relative_to(folder) for folder in OUR_FOLDERS)


class SyncCounter(TorchDispatchMode):
    """Records (operation, file, function, file:line) of every synchronising operation, located at
    the innermost frame of ours ("torch" when none: it still counts)."""

    def __init__(self) -> None:
        super().__init__()
        self.syncs: list[tuple[str, str, str, str]] = []
        self.active = False  # Tensor.tolist / cpu / numpy are counted while True

    def record(self, name: str) -> None:
        ours = [f for f in traceback.extract_stack()[:-2] if is_ours(f.filename)]
        if ours:
            file = Path(ours[-1].filename).name
            self.syncs.append((name, file, ours[-1].name, f"{file}:{ours[-1].lineno}"))
        else:
            self.syncs.append((name, "torch", "", "torch"))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        if name in SYNC_OPS:
            self.record(name)
        elif name in BOOLEAN_INDEXING_OPS and any(
                isinstance(index, torch.Tensor) and index.dtype in (torch.bool, torch.uint8) for index in args[1]
                if index is not None):
            self.record(f"{name} with a boolean mask")  # its nonzero runs inside the kernel, undispatched
        return func(*args, **(kwargs or {}))


@pytest.fixture
def counted(monkeypatch):
    """A SyncCounter whose Tensor.tolist / cpu / numpy calls are counted too, while it is active."""
    counter = SyncCounter()
    for name in SYNC_METHODS:
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, _original=original, _name=name, **kwargs):
            if counter.active:
                counter.record(f"Tensor.{_name}")
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, wrapper)
    return counter


def make_trainer(tmp_path, method, **overrides):
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = write_toy_parquet(tmp_path, num_images=64)
    recipe = tiny_recipe(method, **{"log_every": 1000, "checkpoint_every": 1000, "epochs": 4,
                                    "augment.jitter_p": 0.8, "augment.grayscale_p": 0.2, **overrides})
    return _Trainer(recipe, info=setup_distributed(device="cpu"), data=data, out=tmp_path / "run", max_steps=None,
                    resume=False, overrides={}, cache_dir=tmp_path / "cache", data_limit=None, progress=False)


def run_steps(trainer, counter, steps):
    batches = trainer.loader.epoch(0, start_step=0)
    for _ in range(steps):
        images = next(batches)
        counter.active = True
        try:
            with counter:
                if torch.cuda.is_available():
                    torch.cuda.set_sync_debug_mode("error")
                try:
                    trainer.train_step(images)
                finally:
                    if torch.cuda.is_available():
                        torch.cuda.set_sync_debug_mode(0)
        finally:
            counter.active = False
        trainer._advance()


@pytest.mark.parametrize("method", METHODS)
def test_a_training_step_makes_no_host_sync_outside_the_augmentations(tmp_path, counted, method):
    trainer = make_trainer(tmp_path, method)
    run_steps(trainer, counted, steps=2)
    others = [(op, where) for op, file, function, where in counted.syncs if (op, file, function) != CPU_SUBSET_SYNC]
    assert others == [], others
    assert int(trainer.step_t) == 2 and int(trainer.bad_step) == -1


def test_the_whole_step_makes_no_host_sync(tmp_path, counted):
    trainer = make_trainer(tmp_path, "byol_equimod")
    # The augmentations' GPU path (torch.where blends; on a CPU they run subsets, which read a count),
    # from the very first step: the trainer builds their constants on the device when it starts.
    trainer.augment.select_subsets = False
    run_steps(trainer, counted, steps=2)
    assert counted.syncs == []


def test_our_frames_are_found_by_folder_not_by_name_prefix(tmp_path):
    augment = Path(equimod_zoo.__file__).resolve().parent / "equimod" / "augment.py"
    assert is_ours(str(augment))
    # a virtual environment beside the checkout whose name starts like it, or inside it
    assert not is_ours(f"{PACKAGE_ROOT}-venv/lib/python3.11/site-packages/torch/_dynamo/eval_frame.py")
    assert not is_ours(f"{PACKAGE_ROOT}/.venv/lib/python3.11/site-packages/torch/_dynamo/eval_frame.py")
    assert not is_ours(str(Path(torch.__file__).resolve()))


def test_the_counter_sees_the_syncs_it_looks_for(counted):
    x = torch.arange(6.0)
    counted.active = True
    with counted:
        x[x > 2].sum().item()
        bool(x.sum() > 0)
        torch.tensor([1.0, 2.0])
        x.tolist()
    counted.active = False
    assert [op for op, *_ in counted.syncs] == ["aten::index with a boolean mask", "aten::_local_scalar_dense",
                                              "aten::_local_scalar_dense", "aten::lift_fresh", "Tensor.tolist"]


def test_the_step_reads_the_learning_rate_and_momentum_from_device_tables(tmp_path, counted):
    trainer = make_trainer(tmp_path, "byol", **{"optim.warmup_epochs": 1})
    assert trainer.optimizer.param_groups[0]["lr"] is trainer.lr_now
    run_steps(trainer, counted, steps=3)
    from equimod_zoo.training.optim import lr_at
    expected = lr_at(2, total_steps=trainer.total_steps, warmup_steps=trainer.warmup_steps, peak_lr=trainer.peak_lr)
    assert float(trainer.lr_now) == pytest.approx(expected, rel=1e-6)


def _two_steps(trainer, second_step):
    """Step 1 eagerly (the optimiser creates its momentum buffers), step 2 with `second_step`."""
    batches = trainer.loader.epoch(0, start_step=0)
    losses = []
    for step in (trainer._train_step, second_step):
        loss, _logs = step(next(batches))
        trainer._advance()
        losses.append(float(loss))
    return losses, trainer.method.state_dict()


def test_the_compiled_step_computes_what_the_eager_step_does(tmp_path, monkeypatch):
    # AOT autograd without inductor's code generation: it traces the whole step (augmentations,
    # forward, backward, LARS, EMA, the device counters) and functionalises its in-place updates,
    # which is what could go wrong in our code; a C++ build per test would cost minutes here.
    compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **options: compile(fn, backend="aot_eager"))
    small = {"precision": "fp32", "model_args": {"channels": [8, 16, 32, 64], "stem_width": 8, "layers": [1, 1, 1, 1]}}
    eager = make_trainer(tmp_path / "eager", "byol", compile="off", **small)
    compiled = make_trainer(tmp_path / "compiled", "byol", compile="step", **small)
    assert compiled.train_step is not compiled._train_step
    eager_losses, eager_state = _two_steps(eager, eager._train_step)
    compiled_losses, compiled_state = _two_steps(compiled, compiled.train_step)
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-5)
    for key, value in eager_state.items():
        torch.testing.assert_close(compiled_state[key], value, rtol=1e-4, atol=1e-5, msg=key)
    assert int(compiled.step_t) == 2
