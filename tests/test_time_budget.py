"""`train --time-budget`: the plan fits the budget, the warm-up is a share of it, and whatever stops a run (the
budget, SIGTERM, SIGKILL, during set-up, training, a checkpoint write or the export) leaves either a complete,
loadable model folder or the previous one untouched; rerunning the same command continues the run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import yaml

import equimod_zoo
from equimod_zoo.errors import UserError
from equimod_zoo.training import budget
from equimod_zoo.training.budget import Costs, fit_plan, parse_duration
from equimod_zoo.training.checkpoint import load_checkpoint
from equimod_zoo.training.methods import byol_momentum
from equimod_zoo.training.run_log import read_log
from equimod_zoo.training.trainer import _Trainer, train
from toy_training import tiny_recipe, write_toy_parquet


@pytest.mark.parametrize(("text", "seconds"), [("60s", 60), ("9m", 540), ("20h", 72000), ("1h30m", 5400),
                                               ("0.5h", 1800), (" 2M ", 120)])
def test_durations_read_as_people_write_them(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["60", "", "9 minutes", "-5m", "0s", "32d", "1h-5m"])
def test_a_duration_without_unit_or_beyond_a_month_is_refused(text):
    with pytest.raises(UserError, match="--time-budget"):
        parse_duration(text)


def test_the_plan_fits_whole_epochs_with_the_final_save_and_keeps_the_warmup_share():
    costs = Costs(step_seconds=0.05, save_seconds=1.0)  # 98 steps an epoch: 4.9 s; a save 1 s
    plan = fit_plan(budget_seconds=540, seconds_left=500, costs=costs, steps_per_epoch=98, warmup_share=10 / 800)
    assert plan.total_steps % 98 == 0 and plan.checkpoint_every == 5  # a save every 5 epochs stays under 5 %
    used = plan.total_steps * 0.05 + (plan.epochs // 5) * 1.0 + budget.final_reserve(costs, 540)
    assert used <= 500 < used + 5 * 0.05 * 98 + 1.0  # one more save interval would not fit
    assert plan.warmup_steps == round(plan.total_steps / 80)  # the paper's 10 of 800 epochs, not 10 epochs
    assert plan.recipe_overrides()["optim.warmup_epochs"] == pytest.approx(plan.warmup_steps / 98)
    capped = fit_plan(budget_seconds=540, seconds_left=500, costs=costs, steps_per_epoch=98, warmup_share=0.1,
                      max_epochs=3)
    assert capped.total_steps == 3 * 98 and capped.warmup_steps == round(0.1 * 3 * 98)


def test_less_than_an_epoch_fits_as_steps_and_nothing_fitting_is_one_line():
    costs = Costs(step_seconds=5.0, save_seconds=0.5)
    plan = fit_plan(budget_seconds=60, seconds_left=40, costs=costs, steps_per_epoch=20, warmup_share=0.1,
                    steps_done=1)
    assert plan.total_steps == 1 + int((40 - budget.final_reserve(costs, 60)) // (5.0 + 0.5 / 20))
    assert plan.epochs == 1 and plan.warmup_steps == 1
    with pytest.raises(UserError, match="give a longer budget"):
        fit_plan(budget_seconds=60, seconds_left=2, costs=costs, steps_per_epoch=20, warmup_share=0.1)


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    return write_toy_parquet(tmp_path_factory.mktemp("toy"), num_images=32)


def meta(run):
    return json.loads((run / "model" / "config.json").read_text())["equimod"]


def test_a_budgeted_run_lays_its_schedules_over_the_fitted_length_and_says_so(toy_data, tmp_path):
    recipe = tiny_recipe("byol_equimod", epochs=40, **{"optim.warmup_epochs": 4})  # a tenth of the run warms up
    start = time.monotonic()
    result = train(recipe, data=toy_data, out=tmp_path / "run", time_budget=120, epochs=3,  # at most 3 epochs
                   cache_dir=tmp_path / "cache", progress=False)
    assert time.monotonic() - start < 120 and result.finished and result.planned_steps == 6
    plan = json.loads((tmp_path / "run" / "run.json").read_text())["plan"]
    assert plan["total_steps"] == 6 and plan["warmup_steps"] == 1 and plan["budget_seconds"] == 120
    cycle = meta(tmp_path / "run")["cycles"][-1]
    assert (cycle["epochs"], cycle["steps"], cycle["planned_steps"], cycle["time_budget_seconds"]) == (3, 6, 6, 120)
    rows = read_log(tmp_path / "run")  # the cosine and BYOL's momentum run over the 6 fitted steps
    assert [row["step"] for row in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[-1]["momentum"] == pytest.approx(byol_momentum(5, 6, 0.996)) and rows[0]["lr"] == 0.0
    again = train(recipe, data=toy_data, out=tmp_path / "run", time_budget=120, epochs=3,
                  cache_dir=tmp_path / "cache", progress=False)
    assert again.finished and again.step == 6  # the same command again: nothing left, nothing retrained


def test_the_budget_running_out_in_set_up_writes_nothing(toy_data, tmp_path):
    result = train(tiny_recipe("simclr"), data=toy_data, out=tmp_path / "run", time_budget=5,
                   started=time.monotonic() - 10, cache_dir=tmp_path / "cache", progress=False)
    assert result.stopped_by == "time budget during set-up" and result.step == 0
    assert not (tmp_path / "run").exists()


def test_the_budget_running_out_in_training_saves_in_time_and_a_rerun_finishes(toy_data, tmp_path, monkeypatch):
    step = _Trainer._train_step

    def slowing(self, images):  # once the plan is fitted, every step takes three times what was measured
        if self.plan is not None:
            time.sleep(2 * self.plan.costs.step_seconds)
        return step(self, images)

    monkeypatch.setattr(_Trainer, "_train_step", slowing)
    recipe = tiny_recipe("simclr", epochs=200)
    start = time.monotonic()
    result = train(recipe, data=toy_data, out=tmp_path / "run", time_budget=12,  # the plan fills the budget
                   cache_dir=tmp_path / "cache", progress=False)
    assert time.monotonic() - start < 12
    assert result.stopped_by == "time budget" and not result.interrupted and result.step < result.planned_steps
    assert meta(tmp_path / "run")["steps"] == result.step  # the model folder says what it holds
    monkeypatch.setattr(_Trainer, "_train_step", step)
    again = train(recipe, data=toy_data, out=tmp_path / "run", time_budget=60, cache_dir=tmp_path / "cache",
                  progress=False)
    assert again.finished and again.planned_steps == result.planned_steps  # the same plan, not a new one
    assert meta(tmp_path / "run")["steps"] == result.planned_steps


# ---- killed in a subprocess ----------------------------------------------------------------------------------
# The command line, with a hook run first (a patch that sends a signal at a chosen moment). Saves are allowed
# every epoch, so that a run of a few seconds has several.
_DRIVER = textwrap.dedent("""
    import os, signal, sys
    import equimod_zoo.training.budget as budget
    budget.SAVE_SHARE = 100.0
    {hook}
    from equimod_zoo.cli import main
    sys.argv = ["equimod-zoo", *sys.argv[1:]]
    main()
""")


@pytest.fixture
def command(toy_data, tmp_path):
    recipe = tiny_recipe("simclr_equimod", epochs=40).to_dict()
    recipe.pop("name")
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(recipe))
    args = ["train", "--recipe", str(tmp_path / "toy.yaml"), "--data", str(toy_data), "--out", str(tmp_path / "run"),
            "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--time-budget", "3m", "--epochs", "6"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}

    def start(hook: str = "") -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", _DRIVER.format(hook=textwrap.dedent(hook)), *args], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def finish(process: subprocess.Popen) -> tuple[int, str]:
        output, _ = process.communicate(timeout=240)
        return process.returncode, output

    return start, finish


def _wait_for(path, process, timeout=120):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before " + str(path)
        time.sleep(0.02)


def _assert_loadable(run, steps=None):
    equimod_zoo.load(run)
    if steps is not None:
        assert meta(run)["steps"] == steps


def _continues_to_the_end(command, run):
    start, finish = command
    code, output = finish(start())
    assert code == 0 and "finished" in output and "6 epochs (12 steps)" in output, output
    _assert_loadable(run, steps=12)
    assert json.loads((run / "run.json").read_text())["plan"]["total_steps"] == 12


def _checkpoint_step(run):
    return load_checkpoint(run / "checkpoint.pt")["state"]["step"]


def test_sigterm_then_sigkill_after_a_save_leave_a_loadable_model_and_a_rerun_finishes(command, tmp_path):
    start, finish = command
    run = tmp_path / "run"
    process = start()
    _wait_for(run / "checkpoint.pt", process)
    process.send_signal(signal.SIGTERM)
    code, output = finish(process)
    assert code == 128 + signal.SIGTERM, output
    assert "stopped by SIGTERM" in output and "rerun the same command" in output
    _assert_loadable(run, steps=_checkpoint_step(run))  # saved at the next step boundary
    stopped_at = _checkpoint_step(run)
    if stopped_at < 10:  # the rerun is killed outright once it has saved again
        process = start()
        deadline = time.monotonic() + 120
        while _checkpoint_step(run) == stopped_at and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        finish(process)
        _assert_loadable(run)
        assert meta(run)["steps"] >= _checkpoint_step(run)  # the model is never behind its checkpoint
    _continues_to_the_end(command, run)


# A save cut short: mid-export (the staged folder half written), then, in the rerun, mid-checkpoint (its export done).
_KILL_AT = """
    import equimod_zoo.{module} as target
    real, calls = target.{function}, []
    def cut(*args, **kwargs):
        calls.append(1)
        if len(calls) == {call}:
            {before}
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    target.{function} = cut
"""


def test_a_kill_in_a_save_leaves_the_previous_model_untouched_and_a_rerun_finishes(command, tmp_path):
    start, finish = command
    run = tmp_path / "run"
    # the first attempt's rehearsal and first save write weights twice each (backbone, heads): the 6th is the
    # second save's heads, in its staging folder
    code, output = finish(start(_KILL_AT.format(module="model_folder", function="save_weights", call=6,
                                                before="real(*args, **kwargs)")))
    assert code == -signal.SIGKILL, output
    first_save = _checkpoint_step(run)
    _assert_loadable(run, steps=first_save)  # the first save's model, as it was
    assert [p.name for p in run.iterdir() if p.name.endswith(".partial")]  # the cut export's staging folder
    # the rerun (no rehearsal: the plan is kept) is cut in its second checkpoint write, half written
    code, output = finish(start(_KILL_AT.format(module="training.checkpoint", function="torch.save", call=2,
                                                before="open(args[1], 'wb').write(b'half a checkpoint')")))
    assert code == -signal.SIGKILL, output
    assert _checkpoint_step(run) == first_save + 2  # the previous checkpoint, intact
    _assert_loadable(run, steps=first_save + 4)  # the cut save's export went through first
    assert [p.name for p in run.iterdir() if p.name.endswith(".tmp")]  # the cut checkpoint's temporary file
    _continues_to_the_end(command, run)
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]  # the debris is gone


def test_a_signal_in_set_up_changes_nothing_and_the_run_starts_when_rerun(command, tmp_path):
    start, finish = command
    run = tmp_path / "run"
    hook = """
        import equimod_zoo.training.trainer as trainer
        real = trainer.load_train_data
        def interrupted(*args, **kwargs):
            os.kill(os.getpid(), signal.SIG{name})
            return real(*args, **kwargs)
        trainer.load_train_data = interrupted
    """
    code, output = finish(start(hook.format(name="TERM")))
    assert code == 128 + signal.SIGTERM and "during set-up: nothing trained" in output, output
    assert not (run / "checkpoint.pt").exists() and not (run / "model").exists()
    _continues_to_the_end(command, run)
    before = {p.name: p.stat().st_mtime_ns for p in (run / "model").iterdir()}
    code, output = finish(start(hook.format(name="KILL")))  # a killed retry: the finished model stays as it was
    assert code == -signal.SIGKILL
    assert {p.name: p.stat().st_mtime_ns for p in (run / "model").iterdir()} == before
    _assert_loadable(run, steps=12)
