import json

import pytest

from equimod_zoo.training import zoo_runs
from equimod_zoo.training.recipe import load_recipe


def test_every_campaign_pairs_share_one_budget_and_recipes_exist():
    for runs in zoo_runs.CAMPAIGNS.values():
        by_name = {run.name: run for run in runs}
        for run in runs:
            recipe = load_recipe(run.recipe, overrides=run.overrides)
            assert recipe.method.name == run.name.split("_r")[0]
            partner = by_name.get(run.name.replace("_equimod", "")) if "_equimod" in run.name else None
            if partner is not None:  # same budget, only EquiMod differs
                assert (partner.epochs, partner.batch_size, partner.data_limit, partner.overrides) == (
                    run.epochs, run.batch_size, run.data_limit, run.overrides)


def test_run_campaign_trains_each_run_and_resumes_from_a_checkpoint(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("equimod_zoo.training.trainer.train", lambda recipe, **kw: calls.append((recipe, kw)))
    (tmp_path / "simclr_equimod_r18_cifar10").mkdir()
    (tmp_path / "simclr_equimod_r18_cifar10" / zoo_runs.CHECKPOINT_FILE).write_bytes(b"")
    folders = zoo_runs.run_campaign("cpu", data="data", out=tmp_path)
    assert [f.name for f in folders] == ["simclr_r18_cifar10", "simclr_equimod_r18_cifar10"]
    assert [(recipe, kw["resume"], kw["data_limit"]) for recipe, kw in calls] == [
        ("simclr_r18_cifar10_cpu", False, 16_000), ("simclr_equimod_r18_cifar10_cpu", True, 16_000)]



def test_budget_fits_one_epoch_count_for_the_pair_from_timed_runs(tmp_path, monkeypatch):
    speeds = {"simclr_r18_cifar10": 1000.0, "simclr_equimod_r18_cifar10": 500.0}  # images per second
    trained = []

    def fake_train(recipe, *, out, epochs, batch_size, overrides, max_steps=None, **kw):
        if max_steps is None:  # the real run, after calibration
            trained.append((out.name, epochs))
            return
        out.mkdir(parents=True)
        every, ips = overrides["log_every"], speeds[out.name]
        rows = [f"{s},{s / 98:.4f},{ips / 10 if s == every else ips}" for s in range(every, max_steps + 1, every)]
        (out / "log.csv").write_text("step,epoch,images_per_s\n" + "\n".join(rows) + "\n")

    monkeypatch.setattr("equimod_zoo.training.trainer.train", fake_train)
    pair = ["simclr_r18_cifar10", "simclr_equimod_r18_cifar10"]
    zoo_runs.run_campaign("gpu", data="data", out=tmp_path, only=pair, budget_minutes=10)
    # 98 steps of 512 images an epoch: 50.2 s and 100.4 s; the slow first interval (warm-up) is not counted
    expected = int(600 // (98 * 512 / 1000 + 98 * 512 / 500))
    assert trained == [(name, expected) for name in pair]  # one budget for the pair
    record = json.loads((tmp_path / "budget.json").read_text())
    assert record["epochs"] == expected
    assert record["calibrated_seconds_per_epoch"]["simclr_r18_cifar10"] == pytest.approx(98 * 512 / 1000, rel=1e-3)
    assert not (tmp_path / ".calibration").exists()


def test_epochs_override_applies_to_every_selected_run(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("equimod_zoo.training.trainer.train", lambda recipe, **kw: calls.append(kw["epochs"]))
    zoo_runs.run_campaign("gpu", data="data", out=tmp_path, only=["byol_r18_cifar10", "byol_equimod_r18_cifar10"],
                          epochs=38)
    assert calls == [38, 38]
    with pytest.raises(ValueError, match="give one"):
        zoo_runs.run_campaign("gpu", data="data", out=tmp_path, epochs=3, budget_minutes=1)
