"""The training loop end to end on a toy set: the four methods learn, runs resume exactly, SIGTERM and
non-finite losses are handled, and the run folder loads with `equimod_zoo.load`."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import safetensors.torch
import torch
import yaml
from typer.testing import CliRunner

import equimod_zoo
from equimod_zoo.cli import app
from equimod_zoo.training.checkpoint import load_checkpoint
from equimod_zoo.training.export import export_checkpoint, method_from_checkpoint
from equimod_zoo.equimod.heads_file import read_heads_schema
from equimod_zoo.training.methods import SSLMethod
from equimod_zoo.training.recipe import load_recipe
from equimod_zoo.training.trainer import train
from equimod_zoo.errors import NonFiniteLossError
from toy_training import METHODS, tiny_recipe, write_toy_parquet


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    return write_toy_parquet(tmp_path_factory.mktemp("toy"))


@pytest.fixture
def run(toy_data, tmp_path):
    """`train` on the toy data with a per-test cache, no progress bar."""
    def _train(recipe, out, **kwargs):
        return train(recipe, data=toy_data, out=tmp_path / out, cache_dir=tmp_path / "cache", progress=False,
                     **kwargs)
    return _train


def read_rows(folder):
    with open(folder / "log.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("method", METHODS)
def test_each_method_lowers_the_loss(run, tmp_path, method):
    result = run(tiny_recipe(method, batch_size=64, epochs=10), "run")
    assert result.finished and result.step == 10 and result.epochs_completed == 10
    losses = [float(row["loss"]) for row in read_rows(tmp_path / "run")]
    assert len(losses) == 10 and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.05, losses


def test_run_folder_loads_with_equimod_zoo_load(run, tmp_path, toy_data):
    result = run(tiny_recipe("simclr_equimod"), "run", max_steps=3)
    folder = tmp_path / "run"
    assert result.exported and not result.finished
    for name in ("run.json", "log.csv", "recipe.yaml", "checkpoint.pt", "model/config.json", "model/model.safetensors",
                 "model/equimod_heads.safetensors", "model/log.csv", "model/recipe.yaml"):
        assert (folder / name).is_file(), name
    assert (folder / "model" / "log.csv").read_text() == (folder / "log.csv").read_text()
    assert any(p.name.startswith("events.out.tfevents") for p in (folder / "tb").iterdir())
    rows = read_rows(folder)
    assert [r["step"] for r in rows] == ["1", "2", "3"]
    assert {"step", "epoch", "lr", "loss", "loss_inv", "loss_eq", "eq_gain", "images_per_s"} <= set(rows[0])
    assert load_recipe(folder / "recipe.yaml") == tiny_recipe("simclr_equimod")

    config = json.loads((folder / "model" / "config.json").read_text())
    meta = config["equimod"]
    assert (meta["method"], meta["recipe"], meta["epochs"], meta["steps"]) == ("simclr_equimod",
                                                                               "simclr_equimod_r18_cifar10", 0, 3)
    assert meta["data"]["num_images"] == 64 and len(meta["data"]["sha256"]) == 64 and "results" not in meta
    assert {"recipe_config", "batch_size", "seed", "source_commit", "weights_sha256"} <= set(meta)
    cfg = config["pretrained_cfg"]
    assert cfg["input_size"] == [3, 8, 8] and cfg["crop_pct"] == 1.0 and cfg["interpolation"] == "bicubic"
    assert cfg["mean"] == [0.4914, 0.4822, 0.4465] and cfg["std"] == [0.247, 0.2435, 0.2616]

    payload = load_checkpoint(folder / "checkpoint.pt")
    method, _ = method_from_checkpoint(payload)
    heads = safetensors.torch.load_file(folder / "model" / "equimod_heads.safetensors")
    assert torch.equal(heads["param_mean"], payload["param_mean"]) and torch.equal(heads["param_std"],
                                                                                   payload["param_std"])
    assert any(k.startswith("g_t.") for k in heads) and any(k.startswith("projection.") for k in heads)
    schema = read_heads_schema(folder / "model")  # recorded in config.json, following the recipe's parameter list
    assert schema == method.heads_schema(tiny_recipe("simclr_equimod").augment.params)
    assert schema.g_t == (len(schema.param_names), 16) and meta["heads"] == schema.to_dict()
    model = equimod_zoo.load(folder).eval()
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model(x), method.backbone.eval()(x), atol=1e-6)
    assert export_checkpoint(folder, tmp_path / "again").equimod.weights_sha256 == meta["weights_sha256"]


def test_resume_continues_exactly(run, tmp_path):
    recipe = tiny_recipe("byol_equimod")  # BYOL target, EquiMod statistics: the most state to restore
    straight = run(recipe, "straight")
    assert straight.step == 8
    first = run(recipe, "resumed", max_steps=3)  # stops mid-epoch (4 steps per epoch)
    first_state = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["state"]
    assert first.step == 3 and first_state["step"] == 3 and first_state["train_seconds"] > 0
    second = run(None, "resumed", resume=True, max_steps=6)
    third = run("byol_equimod_r18_cifar10", "resumed", resume=True)
    assert (second.step, third.step, third.finished) == (6, 8, True)
    resumed, reference = read_rows(tmp_path / "resumed"), read_rows(tmp_path / "straight")
    assert [r["step"] for r in resumed] == [str(s) for s in range(1, 9)]  # no step logged twice
    for key in ("loss", "loss_inv", "loss_eq", "eq_gain", "lr", "momentum"):
        assert [r[key] for r in resumed] == [r[key] for r in reference], key
    a = safetensors.torch.load_file(tmp_path / "straight" / "model" / "model.safetensors")
    b = safetensors.torch.load_file(tmp_path / "resumed" / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    compute = json.loads((tmp_path / "resumed" / "model" / "config.json").read_text())["equimod"]["compute"]
    assert compute["hardware"] == "cpu" and compute["train_seconds"] >= round(first_state["train_seconds"], 1)
    assert compute["seconds_per_epoch"] == pytest.approx(compute["train_seconds"] / 2, abs=0.05)  # summed over resumes


def test_resume_refuses_what_would_change_the_run(run, tmp_path, toy_data):
    run(tiny_recipe("simclr"), "run", max_steps=1)
    with pytest.raises(ValueError, match="already holds a run"):
        run(tiny_recipe("simclr"), "run")
    with pytest.raises(ValueError, match="cannot change epochs"):
        run(None, "run", resume=True, epochs=5)
    with pytest.raises(ValueError, match="started with recipe 'simclr_r18_cifar10', not 'byol_r18_cifar10'"):
        run("byol_r18_cifar10", "run", resume=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        run(None, "elsewhere", resume=True)


def test_sigterm_checkpoints_at_the_next_step_and_resumes(run, tmp_path):
    folder = tmp_path / "run"
    previous = signal.signal(signal.SIGTERM, lambda *args: None)  # a late signal must not kill pytest
    killer = threading.Thread(target=_terminate_after_first_row, args=(folder,))
    try:
        killer.start()
        result = run(tiny_recipe("simclr", epochs=10), "run")
        killer.join()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert result.interrupted and result.exported and result.stopped_by == "SIGTERM" and 1 <= result.step < 40
    assert json.loads((folder / "model" / "config.json").read_text())["equimod"]["steps"] == result.step
    assert load_checkpoint(folder / "checkpoint.pt")["state"]["step"] == result.step
    resumed = run(None, "run", resume=True, max_steps=result.step + 1)
    assert resumed.step == result.step + 1 and resumed.exported


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(run, tmp_path, monkeypatch):
    forward, calls = SSLMethod.forward, []

    def poisoned(self, *args, **kwargs):
        output = forward(self, *args, **kwargs)
        calls.append(1)
        if len(calls) >= 6:
            output.loss = output.loss * float("nan")
        return output

    monkeypatch.setattr(SSLMethod, "forward", poisoned)
    with pytest.raises(NonFiniteLossError, match="non-finite at step 6 .*last good checkpoint"):
        run(tiny_recipe("simclr", epochs=3), "run")
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert checkpoint["state"]["step"] == 4  # the end of epoch 1, before the bad step
    assert all(torch.isfinite(v).all() for v in checkpoint["method"].values() if v.is_floating_point())
    # the model folder is the last good checkpoint's, and loads
    assert json.loads((tmp_path / "run" / "model" / "config.json").read_text())["equimod"]["steps"] == 4
    equimod_zoo.load(tmp_path / "run")


def test_cli_trains_from_a_user_recipe_file(toy_data, tmp_path):
    recipe = tiny_recipe("simclr").to_dict()
    recipe.pop("name")
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(recipe))
    runner = CliRunner()
    args = ["train", "--recipe", str(tmp_path / "toy.yaml"), "--data", str(toy_data), "--out", str(tmp_path / "run"),
            "--max-steps", "1", "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "stopped at step 1" in result.output and (tmp_path / "run" / "model" / "model.safetensors").is_file()
    unknown = runner.invoke(app, ["train", "--recipe", "nope", "--data", str(toy_data), "--out", str(tmp_path / "x")])
    assert unknown.exit_code == 2 and "unknown recipe 'nope'" in unknown.output


def test_cli_data_limit_and_recipe_overrides_reach_the_run(toy_data, tmp_path):
    recipe = tiny_recipe("simclr").to_dict()
    recipe.pop("name")
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(recipe))
    args = ["train", "--recipe", str(tmp_path / "toy.yaml"), "--data", str(toy_data), "--out", str(tmp_path / "run"),
            "--max-steps", "1", "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--data-limit", "32",
            "--set", "optim.warmup_epochs=0.5", "--set", "seed=7"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    run = yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())
    assert run["optim"]["warmup_epochs"] == 0.5 and run["seed"] == 7
    meta = json.loads((tmp_path / "run" / "model" / "config.json").read_text())["equimod"]
    assert meta["data"]["num_images"] == 32
    bad = CliRunner().invoke(app, [*args[:-4], "--set", "no-equals-sign"])
    assert bad.exit_code == 2 and "KEY=VALUE" in bad.output


def _terminate_after_first_row(folder):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (folder / "log.csv").is_file() and len(read_rows(folder)) >= 1:
            os.kill(os.getpid(), signal.SIGTERM)
            return
        time.sleep(0.005)


def test_cli_exits_non_zero_after_a_sigterm_checkpoint(toy_data, tmp_path):
    recipe = tiny_recipe("simclr", epochs=10).to_dict()
    recipe.pop("name")
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(recipe))
    folder = tmp_path / "run"
    args = ["train", "--recipe", str(tmp_path / "toy.yaml"), "--data", str(toy_data), "--out", str(folder),
            "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]
    previous = signal.signal(signal.SIGTERM, lambda *args: None)  # a late signal must not kill pytest
    killer = threading.Thread(target=_terminate_after_first_row, args=(folder,))
    try:
        killer.start()
        result = CliRunner().invoke(app, args)
        killer.join()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert result.exit_code == 128 + signal.SIGTERM, result.output
    assert "stopped by SIGTERM" in result.output
    step = load_checkpoint(folder / "checkpoint.pt")["state"]["step"]
    assert 1 <= step < 40


def test_a_new_attempt_removes_what_a_killed_checkpoint_write_left(run, tmp_path):
    folder = tmp_path / "run"
    run(tiny_recipe("simclr", epochs=3), "run", max_steps=2)
    # kill -9 in the middle of an atomic checkpoint write, as a dead run leaves it.
    script = ("import os, signal, sys\nfrom equimod_zoo.atomic import atomic_path\n"
              "with atomic_path(sys.argv[1]) as tmp:\n    tmp.write_bytes(b'x' * 1_000_000)\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n")
    killed = subprocess.run([sys.executable, "-c", script, str(folder / "checkpoint.pt")])
    assert killed.returncode == -signal.SIGKILL
    debris = [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert len(debris) == 1 and debris[0].name.startswith(".checkpoint.pt.")
    assert load_checkpoint(folder / "checkpoint.pt")["state"]["step"] == 2  # the previous one is intact
    resumed = run(None, "run", resume=True)
    assert resumed.finished and not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_a_data_limit_below_the_batch_trains_one_batch_of_all_the_images(toy_data, tmp_path):
    recipe = tiny_recipe("simclr", epochs=1, precision="fp32").override({"batch_size": 64})
    with pytest.warns(UserWarning, match="--data-limit 16: a batch of 16 images, not the recipe's 64"):
        result = train(recipe, data=toy_data, out=tmp_path / "run", data_limit=16, max_steps=1, progress=False)
    assert result.step == 1
    resumed = train(None, data=toy_data, out=tmp_path / "run", data_limit=16, resume=True, progress=False)
    assert resumed.finished
    with pytest.raises(ValueError, match="batch size 128 is larger than the dataset .64 images"):  # all: refused
        train(recipe.override({"batch_size": 128}), data=toy_data, out=tmp_path / "other", progress=False)
